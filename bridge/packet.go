package bridge

import (
	"errors"
	"fmt"
	"slices"

	"github.com/xpraproxy/xpraproxy/frame"
)

// Translator translates the packets of one direction: from a peer of
// From to a peer of To.
type Translator struct{ From, To Gen }

// ErrAlias: a packet named by a number. The proxy gives neither side
// aliases, so a peer that uses one anyway is not speaking to it.
var ErrAlias = errors.New("bridge: packet type is an alias number (none were offered)")

// Packet translates a packet other than hello. It reports whether the
// schema knows the type; an unknown one is translated best effort. p's
// arguments may be shared with the result.
func (t Translator) Packet(p frame.Packet) (frame.Packet, bool, error) {
	if len(p) == 0 {
		return nil, false, errors.New("bridge: empty packet")
	}
	name, ok := frame.AsText(p[0])
	if !ok {
		if _, isInt := p[0].(int64); isInt {
			return nil, false, ErrAlias
		}
		return nil, false, fmt.Errorf("bridge: packet type is %T", p[0])
	}
	known := Known(name)
	switch {
	case t.From == Gen31 && t.To == Gen6:
		if !textual([]byte(name)) {
			return nil, false, errors.New("bridge: packet type is not text")
		}
		out := textArgs(name, p)
		if name == "keymap-changed" {
			out = keymapChanged(out, nestKeymap)
		}
		return out, known, nil
	case t.From == Gen6 && t.To == Gen31:
		if name == "keymap-changed" {
			return keymapChanged(p, unnestKeymap), known, nil
		}
	}
	return p, known, nil
}

// textArgs is p with its type and every argument that reads as text made
// text, the schema's binary arguments left as they are.
func textArgs(name string, p frame.Packet) frame.Packet {
	out := make(frame.Packet, len(p))
	out[0] = name
	binary := binaryArgs[name]
	large := largeBinary[name]
	for i := 1; i < len(p); i++ {
		v := p[i]
		if b, isBytes := v.([]byte); isBytes && (slices.Contains(binary, i) || large && len(b) > largeBinaryMin) {
			out[i] = v
			continue
		}
		out[i] = toText(v, 1)
	}
	return out
}
