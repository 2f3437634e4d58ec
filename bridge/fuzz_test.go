package bridge

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/xpraproxy/xpraproxy/frame"
)

// FuzzTranslate: whatever a peer of either generation sends, decoded as
// the proxy would decode it, translates without a panic, and what the
// translation produces for a 6.x peer that encodes has a text packet type.
func FuzzTranslate(f *testing.F) {
	for _, dir := range []string{"capture", "capture6"} {
		for _, side := range []string{"c2s.bin", "s2c.bin"} {
			data, err := os.ReadFile(filepath.Join("../frame/testdata", dir, side))
			if err != nil {
				f.Fatal(err)
			}
			sr := frame.NewStreamReader(bytesReader(data), frame.AbsMaxPacketSize)
			for i := 0; i < 12; i++ {
				p, err := sr.ReadPacket()
				if err != nil {
					break
				}
				for _, e := range []frame.Encoding{frame.Rencode, frame.RencodePlus} {
					if b, err := e.Append(nil, []any(p)); err == nil && len(b) < 1<<16 {
						f.Add(b)
					}
				}
			}
		}
	}
	// A hello whose "keymap" is not a dict (it crashed the keymap
	// translation once).
	if b, err := frame.Rencode.Append(nil, []any{"hello", frame.NewDict("keymap", int64(5), "keyboard_sync", true)}); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, from := range []Gen{Gen31, Gen6} {
			to := Gen6
			if from == Gen6 {
				to = Gen31
			}
			v, err := from.Encoding().DecodeLimited(data, 100_000)
			if err != nil {
				continue
			}
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				continue
			}
			p := frame.Packet(list)
			var out frame.Packet
			if caps, ok := p[len(p)-1].(frame.Dict); ok {
				ClientHello(caps, from, to, LZ4)
				h := ServerHello(caps, caps, from, to, Zlib)
				if to == Gen31 {
					if _, err := frame.Bencode.Append(nil, BencodeHello(h)); err != nil {
						t.Fatalf("a hello for a bencode client does not bencode: %v", err)
					}
				}
				KeymapConfig(caps)
			}
			out, _, err = Translator{from, to}.Packet(p)
			if err != nil {
				continue
			}
			if to == Gen31 {
				// Whatever a 6.x server sends bencodes for the 3.1 HTML5
				// client.
				if _, err := frame.Bencode.Append(nil, ForBencode(out)); err != nil {
					t.Fatalf("ForBencode left something bencode cannot encode: %v", err)
				}
			}
			b, err := to.Encoding().Append(nil, []any(out))
			if err != nil {
				continue
			}
			back, err := to.Encoding().Decode(b)
			if err != nil {
				t.Fatalf("the translation encodes but does not decode: %v", err)
			}
			if _, isText := back.([]any)[0].(string); to == Gen6 && !isText {
				if _, isInt := back.([]any)[0].(int64); !isInt {
					t.Fatalf("packet type for 6.x is %T", back.([]any)[0])
				}
			}
		}
	})
}

func bytesReader(b []byte) *bytesR { return &bytesR{b: b} }

type bytesR struct{ b []byte }

func (r *bytesR) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
