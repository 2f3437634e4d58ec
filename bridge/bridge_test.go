package bridge

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/xpraproxy/xpraproxy/frame"
)

func TestPacket31to6(t *testing.T) {
	tr := Translator{Gen31, Gen6}
	draw := frame.Packet{[]byte("draw"), int64(1), int64(0), int64(0), int64(2), int64(2), []byte("rgb24"),
		[]byte("abcd\x00\x01"), int64(7), int64(8), frame.NewDict("zlib", int64(1))}
	out, known, err := tr.Packet(draw)
	if err != nil || !known {
		t.Fatalf("draw: %v %v", err, known)
	}
	if out[0] != "draw" || out[6] != "rgb24" {
		t.Errorf("type and coding must be text: %#v %#v", out[0], out[6])
	}
	if b, ok := out[7].([]byte); !ok || string(b) != "abcd\x00\x01" {
		t.Errorf("pixels must stay bytes: %#v", out[7])
	}
	if opts := out[10].(frame.Dict); !isText(opts[0].Key) {
		t.Errorf("option keys must be text: %#v", opts[0].Key)
	}
	// Text that happens to be data stays data where the schema says so.
	clip := frame.Packet{[]byte("clipboard-contents"), int64(3), []byte("CLIPBOARD"), []byte("UTF8_STRING"), int64(8), []byte("bytes"), []byte("hello")}
	out, _, _ = tr.Packet(clip)
	if _, ok := out[6].([]byte); !ok || out[2] != "CLIPBOARD" {
		t.Errorf("clipboard: %#v", out)
	}
	// Modifiers of a key event must be text for 6.x ("unknown modifier b'shift'").
	key := frame.Packet{[]byte("key-action"), int64(1), []byte("a"), true, []any{[]byte("shift"), []byte("mod2")}, int64(97), []byte("A"), int64(38), int64(0)}
	out, _, _ = tr.Packet(key)
	if mods := out[4].([]any); mods[0] != "shift" || out[6] != "A" {
		t.Errorf("key-action: %#v", out)
	}
	// A byte string that is not text stays bytes anywhere.
	bin := frame.Packet{[]byte("mystery"), []byte{0xff, 0xfe}, []byte("ok\x01")}
	out, known, _ = tr.Packet(bin)
	if known || out[0] != "mystery" {
		t.Errorf("unknown type: %#v known=%v", out, known)
	}
	if _, ok := out[1].([]byte); !ok {
		t.Errorf("invalid UTF-8 must stay bytes: %#v", out[1])
	}
	if _, ok := out[2].([]byte); !ok {
		t.Errorf("control characters must stay bytes: %#v", out[2])
	}
	if _, _, err := tr.Packet(frame.Packet{int64(3), int64(1)}); err != ErrAlias {
		t.Errorf("alias: %v", err)
	}
}

func TestKeymapChanged6to31(t *testing.T) {
	p := frame.Packet{"keymap-changed", frame.NewDict("keymap", frame.NewDict("layout", "us", "keycodes", []any{int64(1)}), "other", int64(1))}
	out, _, err := Translator{Gen6, Gen31}.Packet(p)
	if err != nil {
		t.Fatal(err)
	}
	d := out[1].(frame.Dict)
	if d.Has("keymap") || !d.Has("xkbmap_layout") || !d.Has("xkbmap_keycodes") || !d.Has("other") {
		t.Errorf("keymap-changed: %v", d)
	}
	if p[1].(frame.Dict).Has("xkbmap_layout") {
		t.Error("the input packet was modified")
	}
}

func TestNestAndFlatten(t *testing.T) {
	flat := frame.NewDict("encoding", "png", "encoding.quality", int64(50), "encoding.full_csc_modes", frame.NewDict("h264", []any{"YUV420P"}),
		"a.b.c", int64(1), "a.b", int64(2), "mmap", true, "mmap.size", int64(9), "lz4", true)
	nested := nest(dropKeys(flat, networkKeys))
	enc, _ := nested.Dict("encoding")
	if v, _ := enc.Text(""); v != "png" {
		t.Errorf("a key that is also a prefix keeps its value under \"\": %v", enc)
	}
	if _, ok := enc.Dict("full_csc_modes"); !ok {
		t.Errorf("encoding.full_csc_modes must nest under encoding: %v", enc)
	}
	a, _ := nested.Dict("a")
	b, _ := a.Dict("b")
	if v, _ := b.Int(""); v != 2 || !b.Has("c") {
		t.Errorf("a.b: %v", b)
	}
	if nested.Has("mmap") || nested.Has("lz4") {
		t.Errorf("network and mmap keys must be dropped: %v", nested)
	}
	back := flatten(nested)
	for _, k := range []string{"encoding", "encoding.quality", "a.b", "a.b.c"} {
		if !back.Has(k) {
			t.Errorf("flatten lost %s: %v", k, back)
		}
	}
	if _, ok := back.Dict("encoding.full_csc_modes"); !ok {
		t.Errorf("full_csc_modes must stay a dict: %v", back)
	}
	// A stranger's key with thousands of dots stays flat.
	deep := strings.Repeat("x.", 5000) + "y"
	if n := nest(frame.NewDict(deep, int64(1))); !n.Has(deep) {
		t.Errorf("a deep key must stay flat")
	}
}

func TestServerHello6to31(t *testing.T) {
	caps := frame.NewDict("version", "6.5.5", "server", frame.NewDict("mode", "desktop"),
		"clipboard", frame.NewDict("direction", "both", "selections", []any{"CLIPBOARD"}),
		"lz4", frame.NewDict("", true), "rencodeplus", true, "aliases", frame.NewDict())
	encodings := frame.NewDict("encodings", frame.NewDict("", []any{"png", "rgb24"}, "core", []any{"png"}))
	h := ServerHello(caps, encodings, Gen6, Gen31, LZ4)
	for k, want := range map[string]any{"clipboard-direction": "both", "desktop": true, "shadow": false,
		"rencode": true, "lz4": true, "clipboard.contents-slice-fix": true} {
		if v, ok := h.Get(k); !ok || !equal(v, want) {
			t.Errorf("%s = %#v, want %#v", k, v, want)
		}
	}
	if !h.Has("clipboards") || !h.Has("encodings") || !h.Has("encodings.core") || h.Has("rencodeplus") || h.Has("aliases") {
		t.Errorf("server hello for 3.1: %v", h)
	}
}

func TestClientHello6to31Keymap(t *testing.T) {
	caps := frame.NewDict("keymap", frame.NewDict("layout", "us", "x11_keycodes", frame.NewDict("38", []any{"a"})),
		"metadata", frame.NewDict("supported", []any{"title", "size-constraints"}))
	h := ClientHello(caps, Gen6, Gen31, Zlib)
	if !h.Has("xkbmap_layout") || h.Has("keymap") {
		t.Errorf("keymap must become xkbmap_*: %v", h)
	}
	if _, ok := h.Dict("xkbmap_x11_keycodes"); !ok {
		t.Errorf("xkbmap_x11_keycodes must stay a dict: %v", h)
	}
	if ms := h.Texts("metadata.supported"); !slices.Contains(ms, "size-hints") {
		t.Errorf("metadata.supported needs size-hints for 3.1: %v", ms)
	}
	if z, _ := h.Bool("zlib"); !z {
		t.Errorf("a 3.1 peer without lz4 gets zlib: %v", h)
	}
}

// The real captured sessions of both generations, every packet of both
// directions, translated for the other generation: each one encodes in
// the receiver's encoder, and decodes again to the same types.
func TestCapturesTranslate(t *testing.T) {
	for _, c := range []struct {
		dir  string
		from Gen
	}{{"capture", Gen31}, {"capture6", Gen6}} {
		to := Gen6
		if c.from == Gen6 {
			to = Gen31
		}
		aliases := map[int64]string{}
		for _, side := range []string{"s2c.bin", "c2s.bin"} {
			packets := readCapture(t, c.dir, side)
			for _, p := range packets {
				if p.Type() == "hello" {
					if d, ok := p[1].(frame.Dict); ok {
						if a, ok := d.Dict("aliases"); ok {
							for _, kv := range a {
								k, _ := frame.AsText(kv.Key)
								if n, ok := kv.Value.(int64); ok {
									aliases[n] = k
								}
							}
						}
					}
				}
			}
			n := 0
			for i, p := range packets {
				if a, ok := p.Alias(); ok {
					p[0] = aliases[a]
				}
				var out frame.Packet
				var err error
				if p.Type() == "hello" {
					caps := p[1].(frame.Dict)
					if side == "c2s.bin" {
						out = frame.Packet{"hello", ClientHello(caps, c.from, to, LZ4)}
					} else {
						out = frame.Packet{"hello", ServerHello(caps, nil, c.from, to, LZ4)}
					}
				} else if out, _, err = (Translator{c.from, to}).Packet(p); err != nil {
					t.Fatalf("%s/%s packet %d %s: %v", c.dir, side, i, p.Type(), err)
				}
				w := frame.Writer{Encoding: to.Encoding(), Compression: frame.AlgoLZ4.WithLevel(1)}
				b, err := w.AppendPacket(nil, out)
				if err != nil {
					t.Fatalf("%s/%s packet %d %s: encode for %s: %v", c.dir, side, i, p.Type(), to, err)
				}
				back, err := frame.NewStreamReader(bytes.NewReader(b), frame.AbsMaxPacketSize).ReadPacket()
				if err != nil || back.Type() != out.Type() {
					t.Fatalf("%s/%s packet %d: decode again: %v %v", c.dir, side, i, err, back)
				}
				if to == Gen6 {
					if _, ok := back[0].(string); !ok {
						t.Fatalf("packet type for 6.x must be text: %#v", back[0])
					}
					if back.Type() == "draw" && len(back) > 7 {
						if _, ok := back[7].([]byte); !ok {
							t.Fatalf("draw pixels for 6.x must be bytes: %T", back[7])
						}
					}
				}
				n++
			}
			if n < 5 {
				t.Fatalf("%s/%s: only %d packets", c.dir, side, n)
			}
		}
	}
}

func readCapture(t *testing.T, dir, name string) []frame.Packet {
	t.Helper()
	data, err := os.ReadFile("../frame/testdata/" + dir + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	sr := frame.NewStreamReader(bytes.NewReader(data), frame.AbsMaxPacketSize)
	var out []frame.Packet
	for {
		p, err := sr.ReadPacket()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s/%s: packet %d: %v", dir, name, len(out), err)
		}
		out = append(out, p)
	}
}

func isText(v any) bool { _, ok := v.(string); return ok }

func equal(a, b any) bool {
	if x, ok := a.([]byte); ok {
		a = string(x)
	}
	return a == b
}

func TestForBencode(t *testing.T) {
	in := frame.Packet{"info-response", frame.NewDict("a", nil, "b", 1.75, "c", []any{nil, -2.5, math.NaN(), "x"}, "d", true)}
	out := ForBencode(in).(frame.Packet)
	d := out[1].(frame.Dict)
	if d.Has("a") || fmt.Sprint(d.Get("b")) != "1 true" || fmt.Sprint(d.Get("c")) != "[0 -2 0 x] true" {
		t.Errorf("ForBencode: %v", d)
	}
	if _, err := frame.Bencode.Append(nil, []any(out)); err != nil {
		t.Errorf("does not bencode: %v", err)
	}
	if !in[1].(frame.Dict).Has("a") {
		t.Error("the input was modified")
	}
	same := frame.Packet{"draw", int64(1), []byte("pixels"), frame.NewDict("k", int64(2))}
	if got := ForBencode(same).(frame.Packet); &got[0] != &same[0] {
		t.Error("a bencodable packet must not be copied")
	}
	h := BencodeHello(frame.NewDict("rencode", true, "encoders", []any{"rencode"}, "x", nil))
	if v, _ := h.Bool("bencode"); !v || h.Has("x") || fmt.Sprint(h.Texts("encoders")) != "[bencode]" {
		t.Errorf("BencodeHello: %v", h)
	}
}

// A 3.1 client's keymap is nested for 6.x: in its hello, in its
// keymap-changed, and in the keymap-changed the proxy sends a 6.x server
// after the handshake for it.
func TestKeymap31to6(t *testing.T) {
	// The 3.1 GTK client says nothing of "keyboard" (3.1: it has one).
	caps := frame.NewDict([]byte("keyboard_sync"), false, []byte("xkbmap_layout"), []byte("us"),
		[]byte("xkbmap_keycodes"), []any{[]any{int64(16), []byte("Shift_L"), int64(16), int64(0), int64(0)}}, []byte("modifiers"), []any{})
	h := ClientHello(caps, Gen31, Gen6, LZ4)
	km, ok := h.Dict("keymap")
	if !ok || h.Has("xkbmap_layout") || !h.Has("modifiers") {
		t.Fatalf("hello for 6.x: %v", h)
	}
	if l, _ := km.Text("layout"); l != "us" || !km.Has("keycodes") {
		t.Errorf("keymap: %v", km)
	}
	if kb, _ := h.Bool("keyboard"); !kb {
		t.Errorf("a 6.x server gives a client keyboard state only when it says keyboard: %v", h)
	}
	if sync, ok := km.Bool("sync"); !ok || sync {
		t.Errorf("keyboard_sync must be the keymap's sync: %v", km)
	}
	p, ok := KeymapConfig(caps)
	if !ok || p.Type() != "keymap-changed" || len(p) != 3 || p[2] != true {
		t.Fatalf("KeymapConfig: %v", p)
	}
	km, _ = p[1].(frame.Dict).Dict("keymap")
	if l, _ := km.Text("layout"); l != "us" || !km.Has("sync") {
		t.Errorf("KeymapConfig keymap: %v", km)
	}
	if _, ok := KeymapConfig(frame.NewDict("keyboard", false, "xkbmap_layout", "us")); ok {
		t.Error("a client without a keyboard sends no keymap")
	}
	if _, ok := KeymapConfig(frame.NewDict("keyboard", true)); ok {
		t.Error("no keymap in the hello: nothing to send")
	}
	changed, _, err := Translator{Gen31, Gen6}.Packet(frame.Packet{[]byte("keymap-changed"), frame.NewDict([]byte("xkbmap_layout"), []byte("fr")), true})
	if err != nil {
		t.Fatal(err)
	}
	km, _ = changed[1].(frame.Dict).Dict("keymap")
	if l, _ := km.Text("layout"); l != "fr" || changed[1].(frame.Dict).Has("xkbmap_layout") {
		t.Errorf("keymap-changed for 6.x: %v", changed)
	}
}

// A hostile 3.1 hello's own "keymap" (no 3.1 client sends one) is not
// taken for a keymap: nothing panics, xkbmap_* entries replace it.
func TestKeymapHostile(t *testing.T) {
	for _, caps := range []frame.Dict{
		frame.NewDict("keymap", int64(5), "keyboard_sync", true),
		frame.NewDict("keymap", []any{"x"}, "xkbmap_layout", "us", "keyboard_sync", true),
		frame.NewDict("keymap", frame.NewDict("layout", "fr"), "keyboard_sync", true),
	} {
		h := ClientHello(caps, Gen31, Gen6, LZ4)
		KeymapConfig(caps)
		n := 0
		for _, kv := range h {
			if k, _ := frame.AsText(kv.Key); k == "keymap" {
				n++
			}
		}
		if n > 1 {
			t.Errorf("two keymaps: %v", h)
		}
		if caps.Has("xkbmap_layout") {
			if km, _ := h.Dict("keymap"); !km.Has("layout") {
				t.Errorf("xkbmap_layout must be the keymap's layout: %v", h)
			}
		}
	}
}
