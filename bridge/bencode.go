package bridge

import (
	"math"

	"github.com/xpraproxy/xpraproxy/frame"
)

// The 3.1 HTML5 client speaks bencode only. Bencode has integers, byte
// strings, lists and dicts: no None and no floats, which 6.x servers
// send (a 3.1 server never does: its bencoder refuses them). ForBencode
// makes a 6.x value bencodable the way the client would read it anyway:
//
//   - a None in a dict drops the key: the client's JavaScript then sees
//     undefined, as for a key the server did not send;
//   - a None in a list becomes 0, falsy like None (a list keeps its
//     positions: packets are read by index);
//   - a float becomes the integer toward zero, which is what the client's
//     bdecode makes of a number anyway (parseInt); NaN and infinities 0.
//
// Booleans stay: the encoder writes them as 1 and 0, as the client does.
// A new value is built only where something changes.
func ForBencode(v any) any {
	out, _ := forBencode(v, 0)
	return out
}

// forBencode returns v made bencodable and whether that changed it.
func forBencode(v any, depth int) (any, bool) {
	if depth > maxDepth {
		return v, false
	}
	switch x := v.(type) {
	case nil:
		return int64(0), true
	case float64:
		return floatInt(x), true
	case float32:
		return floatInt(float64(x)), true
	case frame.Packet:
		if out, changed := forBencodeList(x, depth); changed {
			return frame.Packet(out), true
		}
	case []any:
		return forBencodeList(x, depth)
	case frame.Dict:
		return forBencodeDict(x, depth)
	}
	return v, false
}

func forBencodeList(x []any, depth int) ([]any, bool) {
	var out []any
	for i, e := range x {
		ne, changed := forBencode(e, depth+1)
		if !changed {
			if out != nil {
				out[i] = e
			}
			continue
		}
		if out == nil {
			out = make([]any, len(x))
			copy(out, x[:i])
		}
		out[i] = ne
	}
	if out == nil {
		return x, false
	}
	return out, true
}

func forBencodeDict(x frame.Dict, depth int) (frame.Dict, bool) {
	var out frame.Dict
	for i, kv := range x {
		if kv.Value == nil {
			if out == nil {
				out = make(frame.Dict, i, len(x))
				copy(out, x[:i])
			}
			continue
		}
		nk, kc := forBencode(kv.Key, depth+1)
		nv, vc := forBencode(kv.Value, depth+1)
		if kc || vc {
			if out == nil {
				out = make(frame.Dict, i, len(x))
				copy(out, x[:i])
			}
			out = append(out, frame.Pair{Key: nk, Value: nv})
			continue
		}
		if out != nil {
			out = append(out, kv)
		}
	}
	if out == nil {
		return x, false
	}
	return out, true
}

// floatInt is f toward zero as an int64, 0 for what has no integer.
func floatInt(f float64) int64 {
	if math.IsNaN(f) || math.IsInf(f, 0) || f >= math.MaxInt64 || f <= math.MinInt64 {
		return 0
	}
	return int64(f)
}

// BencodeHello is a hello translated for a 3.1 client (ServerHello)
// made for one that speaks only bencode: bencodable, and naming bencode
// as the encoder the proxy writes to it.
func BencodeHello(caps frame.Dict) frame.Dict {
	out, _ := forBencodeDict(caps, 0)
	out = append(frame.Dict(nil), out...)
	out.Set("rencode", false)
	out.Set("bencode", true)
	out.Set("encoders", []any{"bencode"})
	return out
}
