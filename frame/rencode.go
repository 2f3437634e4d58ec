package frame

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Type bytes shared by python-rencode 1.0.6 and xpra's rencodeplus.
const (
	rFloat64  = 44
	rList     = 59
	rDict     = 60
	rInt      = 61 // decimal text, then rTerm
	rInt1     = 62
	rInt2     = 63
	rInt4     = 64
	rInt8     = 65
	rFloat32  = 66
	rTrue     = 67
	rFalse    = 68
	rNone     = 69
	rTerm     = 127
	rIntPos   = 0 // 0..43 are themselves
	rIntPosN  = 44
	rIntNeg   = 70 // 70..101 are -1..-32
	rIntNegN  = 32
	rDictFix  = 102 // 102..126: dicts of 0..24 pairs
	rDictFixN = 25
	rStrFix   = 128 // 128..191: strings of 0..63 bytes
	rStrFixN  = 64
	rListFix  = 192 // 192..255: lists of 0..63 items
	rListFixN = 64

	rMaxIntLength = 64 // longest decimal text of an rInt
)

func appendRencode(dst []byte, v any, plus bool, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return dst, fmt.Errorf("frame: nesting deeper than %d", MaxDepth)
	}
	var err error
	switch v := v.(type) {
	case nil:
		return append(dst, rNone), nil
	case bool:
		if v {
			return append(dst, rTrue), nil
		}
		return append(dst, rFalse), nil
	case int:
		return appendRencodeInt(dst, int64(v)), nil
	case int8:
		return appendRencodeInt(dst, int64(v)), nil
	case int16:
		return appendRencodeInt(dst, int64(v)), nil
	case int32:
		return appendRencodeInt(dst, int64(v)), nil
	case int64:
		return appendRencodeInt(dst, v), nil
	case uint8:
		return appendRencodeInt(dst, int64(v)), nil
	case uint16:
		return appendRencodeInt(dst, int64(v)), nil
	case uint32:
		return appendRencodeInt(dst, int64(v)), nil
	case uint:
		return appendRencodeUint(dst, uint64(v))
	case uint64:
		return appendRencodeUint(dst, v)
	case *big.Int:
		if v.IsInt64() {
			return appendRencodeInt(dst, v.Int64()), nil
		}
		return appendRencodeBig(dst, v.String())
	case float32:
		if plus {
			return appendFloat64(dst, float64(v)), nil
		}
		return binary.BigEndian.AppendUint32(append(dst, rFloat32), math.Float32bits(v)), nil
	case float64:
		return appendFloat64(dst, v), nil
	case string:
		return appendRencodeText(dst, v), nil
	case []byte:
		if plus {
			dst = strconv.AppendInt(dst, int64(len(v)), 10)
			return append(append(dst, '/'), v...), nil
		}
		return appendRencodeText(dst, v), nil
	case []string:
		dst = appendRencodeListStart(dst, len(v))
		for _, s := range v {
			dst = appendRencodeText(dst, s)
		}
		return appendRencodeListEnd(dst, len(v)), nil
	case []any:
		dst = appendRencodeListStart(dst, len(v))
		for _, x := range v {
			if dst, err = appendRencode(dst, x, plus, depth+1); err != nil {
				return dst, err
			}
		}
		return appendRencodeListEnd(dst, len(v)), nil
	case Packet:
		return appendRencode(dst, []any(v), plus, depth)
	case Dict:
		if len(v) < rDictFixN {
			dst = append(dst, byte(rDictFix+len(v)))
		} else {
			dst = append(dst, rDict)
		}
		for _, p := range v {
			if dst, err = appendRencode(dst, p.Key, plus, depth+1); err != nil {
				return dst, err
			}
			if dst, err = appendRencode(dst, p.Value, plus, depth+1); err != nil {
				return dst, err
			}
		}
		if len(v) >= rDictFixN {
			dst = append(dst, rTerm)
		}
		return dst, nil
	case map[string]any:
		return appendRencode(dst, sortedDict(v), plus, depth)
	}
	return dst, fmt.Errorf("frame: cannot encode %T", v)
}

func appendRencodeListStart(dst []byte, n int) []byte {
	if n < rListFixN {
		return append(dst, byte(rListFix+n))
	}
	return append(dst, rList)
}

func appendRencodeListEnd(dst []byte, n int) []byte {
	if n >= rListFixN {
		return append(dst, rTerm)
	}
	return dst
}

// sortedDict turns a Go map into a Dict with sorted keys so that encoding
// it is deterministic.
func sortedDict(m map[string]any) Dict {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	d := make(Dict, len(keys))
	for i, k := range keys {
		d[i] = Pair{k, m[k]}
	}
	return d
}

func appendRencodeText[T string | []byte](dst []byte, s T) []byte {
	if len(s) < rStrFixN {
		return append(append(dst, byte(rStrFix+len(s))), s...)
	}
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	return append(append(dst, ':'), s...)
}

func appendFloat64(dst []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, rFloat64), math.Float64bits(f))
}

// appendRencodeInt picks the smallest form, as python-rencode does.
func appendRencodeInt(dst []byte, x int64) []byte {
	switch {
	case x >= 0 && x < rIntPosN:
		return append(dst, byte(rIntPos+x))
	case x < 0 && x >= -rIntNegN:
		return append(dst, byte(rIntNeg-1-x))
	case x >= math.MinInt8 && x <= math.MaxInt8:
		return append(dst, rInt1, byte(x))
	case x >= math.MinInt16 && x <= math.MaxInt16:
		return binary.BigEndian.AppendUint16(append(dst, rInt2), uint16(x))
	case x >= math.MinInt32 && x <= math.MaxInt32:
		return binary.BigEndian.AppendUint32(append(dst, rInt4), uint32(x))
	}
	return binary.BigEndian.AppendUint64(append(dst, rInt8), uint64(x))
}

func appendRencodeUint(dst []byte, x uint64) ([]byte, error) {
	if x <= math.MaxInt64 {
		return appendRencodeInt(dst, int64(x)), nil
	}
	return appendRencodeBig(dst, strconv.FormatUint(x, 10))
}

func appendRencodeBig(dst []byte, digits string) ([]byte, error) {
	if len(digits) >= rMaxIntLength {
		return dst, fmt.Errorf("frame: number is longer than %d digits", rMaxIntLength-1)
	}
	return append(append(append(dst, rInt), digits...), rTerm), nil
}

// rdecoder decodes python-rencode (plus=false) or rencodeplus (plus=true).
type rdecoder struct {
	src    []byte
	pos    int
	plus   bool
	budget int // values left to decode; < 0: no limit
	arena  []byte
}

// Short byte strings are copied into arena chunks instead of one
// allocation each (a 3.1 hello has thousands); a chunk is small, so a
// string kept from a decoded packet keeps at most a chunk alive.
const (
	arenaString = 64
	arenaChunk  = 2 << 10
)

func (d *rdecoder) enc() Encoding {
	if d.plus {
		return RencodePlus
	}
	return Rencode
}

func (d *rdecoder) fail(reason string) error {
	return &DecodeError{Encoding: d.enc(), Offset: d.pos, Reason: reason}
}

func (d *rdecoder) need(n int) error {
	if n < 0 || len(d.src)-d.pos < n {
		return d.fail("truncated data")
	}
	return nil
}

func (d *rdecoder) value(depth int) (any, error) {
	if depth > MaxDepth {
		return nil, d.fail(fmt.Sprintf("nesting deeper than %d", MaxDepth))
	}
	if d.budget == 0 {
		return nil, d.fail("too many values")
	}
	d.budget--
	if err := d.need(1); err != nil {
		return nil, err
	}
	t := d.src[d.pos]
	d.pos++
	switch {
	case t < rIntPosN:
		return int64(t), nil
	case t >= rIntNeg && t < rIntNeg+rIntNegN:
		return int64(rIntNeg-1) - int64(t), nil
	case t >= rStrFix && t < rStrFix+rStrFixN:
		return d.str(int(t-rStrFix), true)
	case t >= rListFix:
		return d.list(int(t-rListFix), depth)
	case t >= rDictFix && t < rDictFix+rDictFixN:
		return d.dict(int(t-rDictFix), depth)
	case t >= '0' && t <= '9':
		d.pos--
		return d.lenString()
	}
	switch t {
	case rInt1:
		if err := d.need(1); err != nil {
			return nil, err
		}
		d.pos++
		return int64(int8(d.src[d.pos-1])), nil
	case rInt2:
		if err := d.need(2); err != nil {
			return nil, err
		}
		d.pos += 2
		return int64(int16(binary.BigEndian.Uint16(d.src[d.pos-2:]))), nil
	case rInt4:
		if err := d.need(4); err != nil {
			return nil, err
		}
		d.pos += 4
		return int64(int32(binary.BigEndian.Uint32(d.src[d.pos-4:]))), nil
	case rInt8:
		if err := d.need(8); err != nil {
			return nil, err
		}
		d.pos += 8
		return int64(binary.BigEndian.Uint64(d.src[d.pos-8:])), nil
	case rInt:
		return d.bigInt()
	case rFloat32:
		if err := d.need(4); err != nil {
			return nil, err
		}
		d.pos += 4
		f := math.Float32frombits(binary.BigEndian.Uint32(d.src[d.pos-4:]))
		if d.plus {
			// rencodeplus writes only float64; keep its values float64.
			return float64(f), nil
		}
		return f, nil
	case rFloat64:
		if err := d.need(8); err != nil {
			return nil, err
		}
		d.pos += 8
		return math.Float64frombits(binary.BigEndian.Uint64(d.src[d.pos-8:])), nil
	case rTrue:
		return true, nil
	case rFalse:
		return false, nil
	case rNone:
		return nil, nil
	case rList:
		return d.list(-1, depth)
	case rDict:
		return d.dict(-1, depth)
	}
	d.pos--
	return nil, d.fail(fmt.Sprintf("invalid type byte 0x%02x", t))
}

// str returns n bytes as text (rencodeplus fixed and ':' strings) or bytes
// (every rencode string, rencodeplus '/' strings).
func (d *rdecoder) str(n int, text bool) (any, error) {
	if err := d.need(n); err != nil {
		return nil, err
	}
	b := d.src[d.pos : d.pos+n]
	d.pos += n
	if d.plus && text {
		// rencodeplus peers decode these as UTF-8 and fail otherwise.
		if !utf8.Valid(b) {
			d.pos -= n
			return nil, d.fail("text is not valid UTF-8")
		}
		return string(b), nil
	}
	if n > arenaString {
		return slices.Clone(b), nil
	}
	if cap(d.arena)-len(d.arena) < n {
		d.arena = make([]byte, 0, arenaChunk)
	}
	start := len(d.arena)
	d.arena = append(d.arena, b...)
	return d.arena[start:len(d.arena):len(d.arena)], nil
}

// lenString reads "<digits>:" or, in rencodeplus, "<digits>/", then data.
func (d *rdecoder) lenString() (any, error) {
	start := d.pos
	n := 0
	for {
		if err := d.need(1); err != nil {
			return nil, err
		}
		c := d.src[d.pos]
		d.pos++
		if c == ':' || (c == '/' && d.plus) {
			if d.pos-start == 1 {
				return nil, d.fail("string length without digits")
			}
			return d.str(n, c == ':')
		}
		if c < '0' || c > '9' || d.pos-start > 10 {
			d.pos--
			return nil, d.fail("invalid string length")
		}
		n = n*10 + int(c-'0')
		if n > len(d.src) {
			return nil, d.fail(fmt.Sprintf("string length %d beyond the data", n))
		}
	}
}

func (d *rdecoder) bigInt() (any, error) {
	start := d.pos
	for {
		if err := d.need(1); err != nil {
			return nil, err
		}
		if d.src[d.pos] == rTerm {
			break
		}
		if d.pos-start >= rMaxIntLength {
			return nil, d.fail("number text too long")
		}
		d.pos++
	}
	text := string(d.src[start:d.pos])
	d.pos++
	if x, err := strconv.ParseInt(text, 10, 64); err == nil {
		return x, nil
	}
	z, ok := new(big.Int).SetString(text, 10)
	if !ok || (len(text) > 0 && text[0] == '+') {
		return nil, d.fail(fmt.Sprintf("invalid number %q", text))
	}
	return z, nil
}

// list reads n items, or items up to rTerm when n < 0. Capacity is never
// taken from the input beyond what the remaining bytes can hold.
func (d *rdecoder) list(n, depth int) (any, error) {
	l := make([]any, 0, max(0, min(n, len(d.src)-d.pos)))
	for i := 0; n < 0 || i < n; i++ {
		if n < 0 {
			if err := d.need(1); err != nil {
				return nil, err
			}
			if d.src[d.pos] == rTerm {
				d.pos++
				break
			}
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		l = append(l, v)
	}
	return l, nil
}

func (d *rdecoder) dict(n, depth int) (any, error) {
	m := make(Dict, 0, max(0, min(n, (len(d.src)-d.pos)/2)))
	for i := 0; n < 0 || i < n; i++ {
		if n < 0 {
			if err := d.need(1); err != nil {
				return nil, err
			}
			if d.src[d.pos] == rTerm {
				d.pos++
				break
			}
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
	return m, nil
}
