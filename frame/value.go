package frame

import (
	"bytes"
	"math"
	"math/big"
)

// Dict is an ordered dictionary: xpra's hellos are Python dicts, whose
// insertion order the encoders preserve, so re-encoding a decoded dict gives
// the same bytes. Keys are string, []byte or int64. Lookups by name match
// string and []byte keys alike, because rencode and bencode peers send text
// keys as bytes.
type Dict []Pair

// Pair is one entry of a Dict.
type Pair struct {
	Key   any
	Value any
}

func keyIs(k any, name string) bool {
	switch k := k.(type) {
	case string:
		return k == name
	case []byte:
		return string(k) == name
	}
	return false
}

// Index returns the position of key name, or -1.
func (d Dict) Index(name string) int {
	for i := range d {
		if keyIs(d[i].Key, name) {
			return i
		}
	}
	return -1
}

// Get returns the value stored under name.
func (d Dict) Get(name string) (any, bool) {
	if i := d.Index(name); i >= 0 {
		return d[i].Value, true
	}
	return nil, false
}

// Has reports whether name is a key.
func (d Dict) Has(name string) bool { return d.Index(name) >= 0 }

// Set replaces the value under name, or appends the pair.
func (d *Dict) Set(name string, v any) {
	if i := d.Index(name); i >= 0 {
		(*d)[i].Value = v
		return
	}
	*d = append(*d, Pair{name, v})
}

// Delete removes name and reports whether it was present.
func (d *Dict) Delete(name string) bool {
	i := d.Index(name)
	if i < 0 {
		return false
	}
	*d = append((*d)[:i], (*d)[i+1:]...)
	return true
}

// DeleteFunc removes every pair whose text key satisfies drop (xpra's proxy
// strips key families such as "cipher*" this way) and returns how many.
func (d *Dict) DeleteFunc(drop func(key string) bool) int {
	out := (*d)[:0]
	n := 0
	for _, p := range *d {
		if k, ok := AsText(p.Key); ok && drop(k) {
			n++
			continue
		}
		out = append(out, p)
	}
	clear((*d)[len(out):])
	*d = out
	return n
}

// Text returns the string value under name (str or bytes).
func (d Dict) Text(name string) (string, bool) {
	v, ok := d.Get(name)
	if !ok {
		return "", false
	}
	return AsText(v)
}

// Int returns the integer value under name (bools count, as in Python).
func (d Dict) Int(name string) (int64, bool) {
	v, ok := d.Get(name)
	if !ok {
		return 0, false
	}
	return AsInt(v)
}

// Bool returns the truth of the value under name as xpra's typedict.boolget
// does: bencode peers send booleans as integers.
func (d Dict) Bool(name string) (val, ok bool) {
	v, ok := d.Get(name)
	if !ok {
		return false, false
	}
	return Truth(v), true
}

// Dict returns the dictionary under name.
func (d Dict) Dict(name string) (Dict, bool) {
	v, ok := d.Get(name)
	if !ok {
		return nil, false
	}
	sub, ok := v.(Dict)
	return sub, ok
}

// Texts returns the list of strings under name; non-text items are skipped.
func (d Dict) Texts(name string) []string {
	v, _ := d.Get(name)
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := AsText(x); ok {
			out = append(out, s)
		}
	}
	return out
}

// AsText returns v as a string if it is text or bytes.
func AsText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

// AsBytes returns v as bytes the way xpra's strtobytes does
// (xpra/util/str_fn.py): bytes as they are; text as latin-1 when every
// character is below 256, else as UTF-8. The HTML5 client sends binary
// values (its challenge_client_salt, built with String.fromCharCode) as
// text, so a character 0x80-0xFF stands for one byte, not two.
func AsBytes(v any) ([]byte, bool) {
	switch v := v.(type) {
	case []byte:
		return v, true
	case string:
		out := make([]byte, 0, len(v))
		for _, r := range v {
			if r > 0xff {
				return []byte(v), true
			}
			out = append(out, byte(r))
		}
		return out, true
	}
	return nil, false
}

// AsInt returns v as an int64 if it is an integer (or bool) that fits.
func AsInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int64:
		return v, true
	case int:
		return int64(v), true
	case bool:
		if v {
			return 1, true
		}
		return 0, true
	case *big.Int:
		if v.IsInt64() {
			return v.Int64(), true
		}
	}
	return 0, false
}

// Truth is Python's bool(v).
func Truth(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case int64:
		return v != 0
	case int:
		return v != 0
	case float64:
		return v != 0
	case float32:
		return v != 0
	case *big.Int:
		return v.Sign() != 0
	case string:
		return v != ""
	case []byte:
		return len(v) > 0
	case []any:
		return len(v) > 0
	case Dict:
		return len(v) > 0
	}
	return true
}

// Equal reports whether two values are the same, treating str and bytes
// with equal content as different (as rencodeplus does), comparing floats
// bit for bit and dicts in order.
func Equal(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case bool:
		bb, ok := b.(bool)
		return ok && a == bb
	case int64:
		bb, ok := b.(int64)
		return ok && a == bb
	case float64:
		// Bitwise, so that a NaN equals itself after a round trip.
		bb, ok := b.(float64)
		return ok && math.Float64bits(a) == math.Float64bits(bb)
	case float32:
		bb, ok := b.(float32)
		return ok && math.Float32bits(a) == math.Float32bits(bb)
	case *big.Int:
		bb, ok := b.(*big.Int)
		return ok && a.Cmp(bb) == 0
	case string:
		bb, ok := b.(string)
		return ok && a == bb
	case []byte:
		bb, ok := b.([]byte)
		return ok && bytes.Equal(a, bb)
	case []any:
		bb, ok := b.([]any)
		if !ok || len(a) != len(bb) {
			return false
		}
		for i := range a {
			if !Equal(a[i], bb[i]) {
				return false
			}
		}
		return true
	case Dict:
		bb, ok := b.(Dict)
		if !ok || len(a) != len(bb) {
			return false
		}
		for i := range a {
			if !Equal(a[i].Key, bb[i].Key) || !Equal(a[i].Value, bb[i].Value) {
				return false
			}
		}
		return true
	}
	return false
}

// NewDict builds a Dict from alternating keys and values, in order:
// NewDict("version", "3.1.3", "mode", "proxy"). An odd count is a
// programming error and panics.
func NewDict(keyvals ...any) Dict {
	if len(keyvals)%2 != 0 {
		panic("frame: NewDict needs key/value pairs")
	}
	d := make(Dict, 0, len(keyvals)/2)
	for i := 0; i < len(keyvals); i += 2 {
		d = append(d, Pair{Key: keyvals[i], Value: keyvals[i+1]})
	}
	return d
}
