package frame

import (
	"fmt"
	"math/big"
	"slices"
	"strconv"
)

// appendBencode writes xpra's bencode: i<n>e, <len>:<bytes>, l...e and
// d...e with keys in insertion order (xpra does not sort them). Booleans
// become i1e/i0e; floats and None cannot be encoded, as in xpra.
func appendBencode(dst []byte, v any, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return dst, fmt.Errorf("frame: nesting deeper than %d", MaxDepth)
	}
	var err error
	switch v := v.(type) {
	case bool:
		if v {
			return append(dst, "i1e"...), nil
		}
		return append(dst, "i0e"...), nil
	case int:
		return appendBencodeInt(dst, int64(v)), nil
	case int8:
		return appendBencodeInt(dst, int64(v)), nil
	case int16:
		return appendBencodeInt(dst, int64(v)), nil
	case int32:
		return appendBencodeInt(dst, int64(v)), nil
	case int64:
		return appendBencodeInt(dst, v), nil
	case uint8:
		return appendBencodeInt(dst, int64(v)), nil
	case uint16:
		return appendBencodeInt(dst, int64(v)), nil
	case uint32:
		return appendBencodeInt(dst, int64(v)), nil
	case uint:
		return append(strconv.AppendUint(append(dst, 'i'), uint64(v), 10), 'e'), nil
	case uint64:
		return append(strconv.AppendUint(append(dst, 'i'), v, 10), 'e'), nil
	case *big.Int:
		return append(v.Append(append(dst, 'i'), 10), 'e'), nil
	case string:
		return appendBencodeString(dst, v), nil
	case []byte:
		return appendBencodeString(dst, v), nil
	case []string:
		dst = append(dst, 'l')
		for _, s := range v {
			dst = appendBencodeString(dst, s)
		}
		return append(dst, 'e'), nil
	case []any:
		dst = append(dst, 'l')
		for _, x := range v {
			if dst, err = appendBencode(dst, x, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, 'e'), nil
	case Packet:
		return appendBencode(dst, []any(v), depth)
	case Dict:
		dst = append(dst, 'd')
		for _, p := range v {
			if dst, err = appendBencode(dst, p.Key, depth+1); err != nil {
				return dst, err
			}
			if dst, err = appendBencode(dst, p.Value, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, 'e'), nil
	case map[string]any:
		return appendBencode(dst, sortedDict(v), depth)
	case nil:
		return dst, fmt.Errorf("frame: bencode cannot encode None")
	}
	return dst, fmt.Errorf("frame: bencode cannot encode %T", v)
}

func appendBencodeInt(dst []byte, x int64) []byte {
	return append(strconv.AppendInt(append(dst, 'i'), x, 10), 'e')
}

func appendBencodeString[T string | []byte](dst []byte, s T) []byte {
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	return append(append(dst, ':'), s...)
}

type bdecoder struct {
	src    []byte
	pos    int
	budget int // values left to decode; < 0: no limit
}

func (d *bdecoder) fail(reason string) error {
	return &DecodeError{Encoding: Bencode, Offset: d.pos, Reason: reason}
}

func (d *bdecoder) value(depth int) (any, error) {
	if depth > MaxDepth {
		return nil, d.fail(fmt.Sprintf("nesting deeper than %d", MaxDepth))
	}
	if d.budget == 0 {
		return nil, d.fail("too many values")
	}
	d.budget--
	if d.pos >= len(d.src) {
		return nil, d.fail("truncated data")
	}
	switch c := d.src[d.pos]; {
	case c == 'i':
		return d.integer()
	case c >= '0' && c <= '9':
		b, err := d.str()
		if err != nil {
			return nil, err
		}
		return slices.Clone(b), nil
	case c == 'u':
		// xpra's decoders return text for the "u" form; no encoder of
		// xpra's writes it, so it is only ever read.
		d.pos++
		b, err := d.str()
		if err != nil {
			return nil, err
		}
		return string(b), nil
	case c == 'l':
		d.pos++
		l := []any{}
		for {
			if d.pos >= len(d.src) {
				return nil, d.fail("truncated list")
			}
			if d.src[d.pos] == 'e' {
				d.pos++
				return l, nil
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
	case c == 'd':
		d.pos++
		m := Dict{}
		for {
			if d.pos >= len(d.src) {
				return nil, d.fail("truncated dict")
			}
			if d.src[d.pos] == 'e' {
				d.pos++
				return m, nil
			}
			k, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			switch k.(type) {
			case []any, Dict:
				return nil, d.fail("unhashable dict key")
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			m = append(m, Pair{k, v})
		}
	default:
		return nil, d.fail(fmt.Sprintf("invalid type identifier 0x%02x", c))
	}
}

// integer parses i<digits>e with bencode's rules: no leading zeros, no -0.
func (d *bdecoder) integer() (any, error) {
	start := d.pos + 1
	end := start
	for end < len(d.src) && d.src[end] != 'e' {
		if end-start > 256 {
			return nil, d.fail("integer too long")
		}
		end++
	}
	if end >= len(d.src) {
		return nil, d.fail("truncated integer")
	}
	text := string(d.src[start:end])
	if text == "" || text == "-" || text[0] == '+' ||
		(text[0] == '0' && len(text) > 1) || (len(text) > 1 && text[0] == '-' && text[1] == '0') {
		return nil, d.fail(fmt.Sprintf("invalid integer %q", text))
	}
	d.pos = end + 1
	if x, err := strconv.ParseInt(text, 10, 64); err == nil {
		return x, nil
	}
	z, ok := new(big.Int).SetString(text, 10)
	if !ok {
		d.pos = start
		return nil, d.fail(fmt.Sprintf("invalid integer %q", text))
	}
	return z, nil
}

// str parses <len>:<bytes> and returns a slice of the input.
func (d *bdecoder) str() ([]byte, error) {
	start := d.pos
	n := 0
	for {
		if d.pos >= len(d.src) {
			return nil, d.fail("truncated string length")
		}
		c := d.src[d.pos]
		if c == ':' {
			break
		}
		if c < '0' || c > '9' || d.pos-start >= 10 {
			return nil, d.fail("invalid string length")
		}
		n = n*10 + int(c-'0')
		d.pos++
	}
	if d.pos == start || (d.src[start] == '0' && d.pos != start+1) {
		return nil, d.fail("invalid string length")
	}
	d.pos++
	if n > len(d.src)-d.pos {
		return nil, d.fail(fmt.Sprintf("string length %d beyond the data", n))
	}
	b := d.src[d.pos : d.pos+n]
	d.pos += n
	return b, nil
}
