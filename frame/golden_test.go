package frame

import (
	"bytes"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fixtures under testdata/golden were written by Debian's xpra 3.1.3
// Python code (testdata/gen_fixtures.py). The values below are the same
// values as Go literals, keyed by fixture name.

func pattern(n int, seed uint32) []byte {
	b := make([]byte, n)
	x := seed
	for i := range b {
		x = (x*1103515245 + 12345) & 0x7FFFFFFF
		if i%3 != 0 {
			b[i] = byte((x >> 16) & 0x0F)
		} else {
			b[i] = byte(i)
		}
	}
	return b
}

func bigInt(s string) *big.Int {
	z, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return z
}

func intRange(n int) []any {
	l := make([]any, n)
	for i := range l {
		l[i] = i
	}
	return l
}

func keyedInts(n int) Dict {
	d := Dict{}
	for i := range n {
		d = append(d, Pair{"k" + string(rune('0'+i/10)) + string(rune('0'+i%10)), i})
	}
	return d
}

var goldenHello = Dict{
	{"version", "3.1.3"},
	{"username", "foo"},
	{"uuid", "0123456789abcdef0123456789abcdef01234567"},
	{"compression_level", 1},
	{"rencode", true},
	{"bencode", true},
	{"encoders", []any{"rencode", "bencode", "yaml"}},
	{"compressors", []any{"zlib", "lz4", "lzo", "brotli"}},
	{"lz4.version", []any{1, 9, 4}},
	{"digest", []any{"hmac", "hmac+sha512", "hmac+sha256", "xor"}},
	{"salt-digest", []any{"hmac+sha512", "hmac+sha256"}},
	{"challenge", true},
	{"desktop_size", []any{1600, 1200}},
	{"screen_sizes", []any{[]any{":50", 1600, 1200, 423, 317, []any{[]any{"0", 0, 0, 1600, 1200, 423, 317}}, 0, 0, 1600, 1200}}},
	{"encoding.min-quality", 30},
	{"windows", Dict{{1, "xterm"}, {2, "xclock"}}},
	{"aliases", Dict{{"hello", 1}, {"ping", 13}, {"draw", 35}}},
}

var goldenCommon = map[string]any{
	"int_0": 0, "int_43": 43, "int_44": 44, "int_m1": -1, "int_m32": -32, "int_m33": -33,
	"int_127": 127, "int_128": 128, "int_m128": -128, "int_m129": -129,
	"int_32767": 32767, "int_32768": 32768, "int_2p31m1": 1<<31 - 1, "int_2p31": 1 << 31,
	"int_m2p31m1": -1<<31 - 1, "int_2p63m1": int64(1<<63 - 1), "int_m2p63": int64(-1 << 63),
	"true": true, "false": false,
	"str_empty": "", "str_hello": "hello", "str_63": strings.Repeat("x", 63), "str_64": strings.Repeat("y", 64),
	"str_1000": strings.Repeat("z", 1000), "str_utf8": "h\u00e9llo \u2603",
	"bytes_80":   bytes.Repeat([]byte{0, 0xff}, 40),
	"list_empty": []any{}, "list_123": []any{1, 2, 3}, "list_63": intRange(63), "list_64": intRange(64),
	"list_nested": []any{[]any{1, []any{2, []any{3, []any{}}}}, "a", []byte("b")},
	"dict_empty":  Dict{}, "dict_one": Dict{{"a", 1}}, "dict_24": keyedInts(24), "dict_25": keyedInts(25),
	"dict_intkeys": Dict{{1, "a"}, {2, "b"}, {-7, "c"}},
	"hello":        goldenHello,
}

var goldenRencodeOnly = map[string]any{
	"int_2p63": bigInt("9223372036854775808"), "int_m2p63m1": bigInt("-9223372036854775809"),
	"int_1e30": bigInt("1000000000000000000000000000000"),
	"none":     nil, "float_1_5": float32(1.5), "float_m0_25": float32(-0.25), "float_0_1": float32(0.1),
	"list_mixed": []any{nil, float32(1.5), true, "s", -5, Dict{{"x", nil}}},
}

var goldenBencodeOnly = map[string]any{
	"int_2p63": bigInt("9223372036854775808"), "int_1e30": bigInt("1000000000000000000000000000000"),
}

// pythonDecoded is what xpra 3.1's decoder returns for v: every string as
// bytes, ints as int64, and for bencode booleans as ints.
func pythonDecoded(v any, enc Encoding) any {
	switch v := v.(type) {
	case string:
		if enc == RencodePlus {
			return v
		}
		return []byte(v)
	case int:
		return int64(v)
	case bool:
		if enc == Bencode {
			if v {
				return int64(1)
			}
			return int64(0)
		}
		return v
	case *big.Int:
		if v.IsInt64() {
			return v.Int64()
		}
		return v
	case []any:
		out := make([]any, len(v))
		for i := range v {
			out[i] = pythonDecoded(v[i], enc)
		}
		return out
	case Dict:
		out := make(Dict, len(v))
		for i, p := range v {
			out[i] = Pair{pythonDecoded(p.Key, enc), pythonDecoded(p.Value, enc)}
		}
		return out
	}
	return v
}

func readGolden(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden", rel))
	if err != nil {
		t.Fatalf("golden fixture missing (regenerate with testdata/gen_fixtures.py): %v", err)
	}
	return b
}

func TestGoldenValues(t *testing.T) {
	for _, tc := range []struct {
		enc    Encoding
		dir    string
		values []map[string]any
	}{
		{Rencode, "rencode", []map[string]any{goldenCommon, goldenRencodeOnly}},
		{Bencode, "bencode", []map[string]any{goldenCommon, goldenBencodeOnly}},
	} {
		n := 0
		for _, m := range tc.values {
			for name, v := range m {
				n++
				t.Run(tc.dir+"/"+name, func(t *testing.T) {
					want := readGolden(t, tc.dir+"/"+name+".bin")
					got, err := tc.enc.Append(nil, v)
					if err != nil {
						t.Fatalf("encode: %v", err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("encode mismatch\n got %x\nwant %x", got, want)
					}
					dec, err := tc.enc.Decode(want)
					if err != nil {
						t.Fatalf("decode: %v", err)
					}
					if exp := pythonDecoded(v, tc.enc); !Equal(dec, exp) {
						t.Fatalf("decoded %#v\nwant %#v", dec, exp)
					}
					again, err := tc.enc.Append(nil, dec)
					if err != nil || !bytes.Equal(again, want) {
						t.Fatalf("re-encode of decoded value differs (%v)\n got %x\nwant %x", err, again, want)
					}
				})
			}
		}
		files, _ := filepath.Glob(filepath.Join("testdata", "golden", tc.dir, "*.bin"))
		if len(files) != n {
			t.Errorf("%s: %d fixtures on disk, %d values in the test", tc.dir, len(files), n)
		}
	}
}

func TestGoldenCompression(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "golden", "compress", "*.bin"))
	if len(files) != 30 {
		t.Fatalf("expected 30 compression fixtures, found %d", len(files))
	}
	for _, f := range files {
		base := filepath.Base(f)
		parts := strings.Split(base, ".") // name.algoN.flag.bin
		t.Run(base, func(t *testing.T) {
			raw := readGolden(t, "compress/"+parts[0]+".raw")
			comp := readGolden(t, "compress/"+base)
			var flag uint8
			for _, c := range parts[2] {
				flag = flag*16 + uint8(strings.IndexRune("0123456789abcdef", c))
			}
			c := Compression(flag)
			got, err := Decompress(c, comp, len(raw))
			if err != nil {
				t.Fatalf("decompress %s: %v", c, err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("decompressed bytes differ")
			}
			if _, err := Decompress(c, comp, len(raw)-1); err == nil {
				t.Fatalf("limit one byte short of the output was not enforced")
			}
			// Our compressor must round-trip, and lz4 in fast mode
			// (levels ≤ 6) must give xpra's exact bytes.
			gc, gdata, err := Compress(c, raw)
			if err != nil {
				t.Fatal(err)
			}
			if gc != c {
				t.Errorf("compression byte %#x, xpra wrote %#x", uint8(gc), uint8(c))
			}
			back, err := Decompress(gc, gdata, len(raw))
			if err != nil || !bytes.Equal(back, raw) {
				t.Fatalf("own compression does not round-trip: %v", err)
			}
			if c.Algo() == AlgoLZ4 && c.Level() < 7 && !bytes.Equal(gdata, comp) {
				t.Errorf("lz4 level %d output differs from xpra's (%d vs %d bytes)", c.Level(), len(gdata), len(comp))
			}
		})
	}
}
