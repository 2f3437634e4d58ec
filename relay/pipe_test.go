package relay_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

// headers are the frame headers in b (whole frames only).
func headers(t *testing.T, b []byte) []frame.Header {
	t.Helper()
	var out []frame.Header
	for len(b) >= frame.HeaderSize {
		n, h, err := frame.FrameLen(b, 0)
		if err != nil {
			t.Fatalf("invalid frame: %v", err)
		}
		if n > len(b) {
			break
		}
		out = append(out, h)
		b = b[n:]
	}
	return out
}

// The pipes relay whatever way the bytes arrive: a frame cut anywhere
// (one byte at a time, odd sizes, several frames at once) comes out whole
// and in order, for raw chunks, small inspected packets and main packets
// too large to inspect (cut through), in both directions.
func TestPipeFrames(t *testing.T) {
	pixels := bytes.Repeat([]byte("0123456789abcdef"), 100_000/16)
	bigText := strings.Repeat("abcdefgh", (2<<20)/8) // over the 1 MiB inspect limit
	packets := []frame.Packet{
		{"draw", 1, 0, 0, 10, 10, "rgb24", frame.Compressed{Data: pixels}, 7, 40, frame.NewDict("lz4", 1)},
		{"ping_echo", int64(5), 0, 0, 0, 0},
		{"big", bigText},
		{"cursor", []any{1, 2, 3}},
	}
	for _, toServer := range []bool{false, true} {
		for _, piece := range []int{1, 13, 4096, 1 << 30} {
			dir := "s2c"
			if toServer {
				dir = "c2s"
			}
			if piece == 1 && toServer {
				continue // one direction byte by byte is enough (slow)
			}
			t.Run(fmt.Sprintf("%s/piece=%d", dir, min(piece, 1<<20)), func(t *testing.T) {
				srv := server(t)
				p := newPeer(t, config(users(t, srv.URL())))
				if p.login(xpratest.Hello("foo"), "bar"); !p.s.Relaying() {
					t.Fatal("not relaying")
				}
				src, dst := p.h.Server, p.c
				traffic := p.s.ServerTraffic
				if toServer {
					src, dst = p.c, p.h.Server
					traffic = p.s.ClientTraffic
				}
				dst.Packets(t) // what the login wrote
				var stream []byte
				w := frame.Writer{Encoding: frame.Rencode}
				for _, pkt := range packets {
					b, err := w.AppendPacket(nil, pkt)
					if err != nil {
						t.Fatal(err)
					}
					stream = append(stream, b...)
				}
				var got []frame.Packet
				base := dst.Out.Len()
				for off := 0; off < len(stream); off += piece {
					end := min(off+piece, len(stream))
					src.Feed(stream[off:end])
					traffic(p.now)
					got = append(got, dst.Packets(t)...)
					// Raw chunks and large packets are cut through: the
					// proxy never holds more than one inspectable packet.
					if held := end - (dst.Out.Len() - base); piece < 1<<20 && held > 1<<20+frame.HeaderSize+piece {
						t.Fatalf("%d bytes fed and not written", held)
					}
				}
				if len(got) != len(packets) {
					t.Fatalf("%d packets out of %d: %s", len(got), len(packets), words(got))
				}
				for i, want := range packets {
					if got[i].Type() != want.Type() {
						t.Fatalf("packet %d: %s, want %s", i, got[i].Type(), want.Type())
					}
				}
				if px, _ := got[0][7].([]byte); !bytes.Equal(px, pixels) {
					t.Errorf("the draw's pixels changed (%d bytes)", len(px))
				}
				if s, _ := frame.AsText(got[2][1]); s != bigText {
					t.Errorf("the cut-through packet changed (%d bytes)", len(s))
				}
			})
		}
	}
}

// With compression=0 the proxy↔server link is uncompressed: what the
// client compresses reaches the server plain, and what the server sends
// plain reaches the client compressed with lz4 (the client's own choice).
func TestPipeCompressionLink(t *testing.T) {
	srv := server(t)
	p := newPeer(t, config(users(t, srv.URL()+"||compression=0")))
	p.w = frame.Writer{Encoding: frame.Rencode, Compression: frame.AlgoLZ4.WithLevel(1)}
	if p.login(xpratest.Hello("foo"), "bar"); !p.s.Relaying() {
		t.Fatal("not relaying")
	}
	p.c.Packets(t)
	p.h.Server.Packets(t)
	sentBefore := p.h.Server.Out.Len()
	text := strings.Repeat("compressible ", 400)
	p.send(frame.Packet{"ping", int64(1), 2, text})
	hs := headers(t, p.h.Server.Out.Bytes()[sentBefore:])
	if len(hs) != 1 || hs[0].Compression.Compressed() {
		t.Errorf("the server got %+v, want one uncompressed frame", hs)
	}
	if got := p.h.Server.Packets(t); len(got) != 1 || got[0].Type() != "ping" {
		t.Fatalf("the server got %s", words(got))
	} else if s, _ := frame.AsText(got[0][3]); s != text {
		t.Error("the ping's text changed")
	}
	clientBefore := p.c.Out.Len()
	p.h.Server.FeedPacket(t, frame.Writer{Encoding: frame.Rencode}, frame.Packet{"ping_echo", int64(1), 0, 0, 0, 0, text})
	p.s.ServerTraffic(p.now)
	hs = headers(t, p.c.Out.Bytes()[clientBefore:])
	if len(hs) != 1 || !hs[0].Compression.Compressed() {
		t.Errorf("the client got %+v, want one lz4 frame", hs)
	}
	if got := p.c.Packets(t); len(got) != 1 || got[0].Type() != "ping_echo" {
		t.Fatalf("the client got %s", words(got))
	}
}
