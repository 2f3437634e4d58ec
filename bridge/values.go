// Package bridge translates xpra packets between the 3.1 and 6.x
// generations (docs/bridge.md): the hello in both directions, and every
// other packet by a per-type schema of binary arguments. It works on
// decoded values (frame.Packet, frame.Dict) and does no I/O, so a relay
// can call it on its loop and a fuzzer can call it on anything.
package bridge

import (
	"unicode/utf8"

	"github.com/xpraproxy/xpraproxy/frame"
)

// Gen is an xpra generation, as far as the wire is concerned.
type Gen uint8

const (
	// Gen31 speaks rencode (every string a byte string), flat dotted
	// hello keys, zlib or lz4.
	Gen31 Gen = iota + 1
	// Gen6 speaks rencodeplus (text and bytes apart), nested hello caps,
	// lz4 (no zlib).
	Gen6
)

func (g Gen) String() string {
	switch g {
	case Gen31:
		return "3.1"
	case Gen6:
		return "6.x"
	}
	return "unknown"
}

// Encoding is the packet encoder the proxy writes to a peer of g.
func (g Gen) Encoding() frame.Encoding {
	if g == Gen6 {
		return frame.RencodePlus
	}
	return frame.Rencode
}

// maxDepth bounds the recursion of the value walkers like the decoders'.
const maxDepth = frame.MaxDepth

// textual reports whether b reads as text to a 6.x peer: valid UTF-8
// without control characters other than tab and line breaks. Anything
// else stays bytes (salts, pixels, keys' raw data).
func textual(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
		if c == 0x7f {
			return false
		}
	}
	return true
}

// toText turns the byte strings of a 3.1 value that read as text into
// text, through lists and dicts (keys included). A new value is built
// where something changes; v itself is not modified.
func toText(v any, depth int) any {
	if depth > maxDepth {
		return v
	}
	switch x := v.(type) {
	case []byte:
		if textual(x) {
			return string(x)
		}
		return x
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toText(e, depth+1)
		}
		return out
	case frame.Dict:
		out := make(frame.Dict, len(x))
		for i, kv := range x {
			out[i] = frame.Pair{Key: toText(kv.Key, depth+1), Value: toText(kv.Value, depth+1)}
		}
		return out
	}
	return v
}
