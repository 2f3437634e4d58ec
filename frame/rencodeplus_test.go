package frame

import (
	"bytes"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
)

// Debian's xpra 3.1.3 has no rencodeplus, so these fixtures were derived by
// hand from ../shared/xpra-spec.md §2.2 and checked against the type codes
// and encode_* functions of xpra's rencodeplus.pyx: bytes are "<len>/", text
// is fixed (0x80+len) below 64 UTF-8 bytes and "<len>:" above, floats are
// always float64 (0x2c), ints use python-rencode's forms.
func TestRencodePlusHandFixtures(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		hex  string
	}{
		{"bytes_abc", []byte("abc"), "332f616263"},
		{"bytes_empty", []byte{}, "302f"},
		{"text_abc", "abc", "83616263"},
		{"text_empty", "", "80"},
		{"text_utf8", "\u00e9", "82c3a9"},
		{"text_64", strings.Repeat("a", 64), "36343a" + strings.Repeat("61", 64)},
		{"bytes_64", bytes.Repeat([]byte("a"), 64), "36342f" + strings.Repeat("61", 64)},
		{"float_1_5", 1.5, "2c3ff8000000000000"},
		{"float32_widened", float32(1.5), "2c3ff8000000000000"},
		{"int_43", 43, "2b"},
		{"int_m32", -32, "65"},
		{"int_100", 100, "3e64"},
		{"int_1000", 1000, "3f03e8"},
		{"int_m70000", -70000, "40fffeee90"},
		{"int_2p40", int64(1) << 40, "410000010000000000"},
		{"big_2p63", new(big.Int).Lsh(big.NewInt(1), 63), "3d" + hex.EncodeToString([]byte("9223372036854775808")) + "7f"},
		{"none_true_false", []any{nil, true, false}, "c3454344"},
		{"packet", []any{"hello", []byte{0, 1}, 1, -1}, "c48568656c6c6f322f00010146"},
		{"dict", Dict{{"a", []byte("x")}, {"b", Dict{}}}, "688161312f78816266"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := hex.DecodeString(tc.hex)
			if err != nil {
				t.Fatal(err)
			}
			got, err := RencodePlus.Append(nil, tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got %x want %x", got, want)
			}
			dec, err := RencodePlus.Decode(want)
			if err != nil {
				t.Fatal(err)
			}
			exp := pythonDecoded(tc.v, RencodePlus)
			if f, ok := exp.(float32); ok {
				exp = float64(f)
			}
			if b, ok := exp.(*big.Int); ok && b.IsInt64() {
				exp = b.Int64()
			}
			if !Equal(dec, exp) {
				t.Fatalf("decoded %#v want %#v", dec, exp)
			}
		})
	}
}

func TestRencodePlusKeepsTextAndBytesApart(t *testing.T) {
	v, err := RencodePlus.Decode([]byte("\xc2\x83abc3/abc"))
	if err != nil {
		t.Fatal(err)
	}
	l := v.([]any)
	if _, ok := l[0].(string); !ok {
		t.Errorf("fixed string decoded as %T, want string", l[0])
	}
	if _, ok := l[1].([]byte); !ok {
		t.Errorf("'/' string decoded as %T, want []byte", l[1])
	}
	// "3:abc" is text in rencodeplus and bytes in python-rencode, which
	// has no '/' form at all.
	if v, _ := RencodePlus.Decode([]byte("3:abc")); !Equal(v, "abc") {
		t.Errorf("rencodeplus '3:abc' = %#v", v)
	}
	if v, _ := Rencode.Decode([]byte("3:abc")); !Equal(v, []byte("abc")) {
		t.Errorf("rencode '3:abc' = %#v", v)
	}
	if _, err := Rencode.Decode([]byte("3/abc")); err == nil {
		t.Error("python-rencode accepted the rencodeplus '/' form")
	}
	if _, err := RencodePlus.Decode([]byte("\x82\xff\xfe")); err == nil {
		t.Error("invalid UTF-8 text accepted")
	}
}
