package frame

import "fmt"

// Encoding is a packet encoder: how the main packet's list is serialised.
type Encoding uint8

// The packet encodings xpra has used. YAML is recognised in headers but not
// decoded: no client of interest sends it and xpraproxy never advertises it.
const (
	Bencode Encoding = iota
	Rencode
	RencodePlus
	YAML
)

// MaxDepth is the deepest nesting of lists and dicts the decoders accept.
// xpra's hellos nest about six levels; the limit keeps hostile input from
// exhausting the stack.
const MaxDepth = 64

// Flag is the protocol flag that announces e in a header.
func (e Encoding) Flag() ProtoFlags {
	switch e {
	case Rencode:
		return FlagRencode
	case RencodePlus:
		return FlagRencodePlus
	case YAML:
		return FlagYAML
	}
	return FlagBencode
}

// String is xpra's name for the encoding, as used in hello capabilities.
func (e Encoding) String() string {
	switch e {
	case Bencode:
		return "bencode"
	case Rencode:
		return "rencode"
	case RencodePlus:
		return "rencodeplus"
	case YAML:
		return "yaml"
	}
	return fmt.Sprintf("encoding(%d)", uint8(e))
}

// EncodingByName maps xpra's capability names to encodings.
func EncodingByName(name string) (Encoding, bool) {
	for _, e := range []Encoding{Bencode, Rencode, RencodePlus, YAML} {
		if e.String() == name {
			return e, true
		}
	}
	return 0, false
}

// Append appends the encoding of v to dst. See the package documentation
// for the Go types accepted; Dict, []any, []string, map[string]any, the
// integer types, *big.Int, floats, string, []byte, bool and nil.
func (e Encoding) Append(dst []byte, v any) ([]byte, error) {
	switch e {
	case Rencode:
		return appendRencode(dst, v, false, 0)
	case RencodePlus:
		return appendRencode(dst, v, true, 0)
	case Bencode:
		return appendBencode(dst, v, 0)
	}
	return dst, fmt.Errorf("frame: %s encoding is not supported", e)
}

// Decode decodes one value that must fill src exactly. Strings are copied,
// so the result does not alias src.
func (e Encoding) Decode(src []byte) (any, error) { return e.DecodeLimited(src, 0) }

// DecodeLimited is Decode with at most maxValues values (every integer,
// string, list, dict and key counts; ≤ 0: no limit). A list of small
// integers decodes to 16 bytes per input byte: the limit bounds that
// amplification where the input is a stranger's.
func (e Encoding) DecodeLimited(src []byte, maxValues int) (any, error) {
	var (
		v   any
		n   int
		err error
	)
	budget := -1
	if maxValues > 0 {
		budget = maxValues
	}
	switch e {
	case Rencode, RencodePlus:
		d := rdecoder{src: src, plus: e == RencodePlus, budget: budget}
		v, err = d.value(0)
		n = d.pos
	case Bencode:
		d := bdecoder{src: src, budget: budget}
		v, err = d.value(0)
		n = d.pos
	default:
		return nil, &DecodeError{Encoding: e, Reason: "invalid packet encoding: decoder is not available"}
	}
	if err != nil {
		return nil, err
	}
	if n != len(src) {
		return nil, &DecodeError{Encoding: e, Offset: n, Reason: fmt.Sprintf("%d trailing bytes", len(src)-n)}
	}
	return v, nil
}
