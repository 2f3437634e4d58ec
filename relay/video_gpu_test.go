//go:build cgo

package relay_test

// The real encoder pool (gpu/, openh264 through cgo) behind Config.Video;
// without cgo the relay's side is TestProxyVideoPool's fake.

import (
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/gpu"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// The encoder pool cmd/ and privsep/ set in Config.Video.
var _ relay.VideoPool = (*gpu.Pool)(nil)

// Proxy video: a server's raw-RGB draw marked proxy=True reaches an h264
// client compressed by the proxy's encoder pool (openh264 on the CPU);
// a draw without the mark passes as it is.
func TestProxyVideoDraw(t *testing.T) {
	pool, _, err := gpu.StartPool("cpu")
	if err != nil || pool == nil {
		t.Fatalf("the CPU encoder pool (openh264; test.sh installs it): %v", err)
	}
	defer pool.Close()
	srv := server(t)
	cfg := config(users(t, srv.URL()))
	cfg.Video = pool
	p := newPeer(t, cfg)
	p.login(with(xpratest.Hello("foo"), "encodings", []any{"h264", "rgb24"}), "bar")
	if !p.s.Relaying() {
		t.Fatalf("not relaying: %s", words(p.seen))
	}
	if got := words(p.h.Server.Packets(t)); got != "" {
		t.Logf("server got %s", got)
	}
	w := frame.Writer{Encoding: frame.Rencode}
	px := make([]byte, 64*64*4)
	for i := range px {
		px[i] = byte(i)
	}
	draw := func(opts frame.Dict) []frame.Packet {
		b, err := w.AppendPacket(nil, frame.Packet{"draw", 1, 0, 0, 64, 64, "rgb32", frame.Compressed{Data: px}, 5, 256, opts})
		if err != nil {
			t.Fatal(err)
		}
		p.h.Server.Feed(b)
		p.s.ServerTraffic(p.now)
		deadline := time.Now().Add(10 * time.Second)
		var got []frame.Packet
		for len(got) == 0 && time.Now().Before(deadline) {
			p.h.Run(t, 10*time.Second)
			got = p.c.Packets(t)
			time.Sleep(10 * time.Millisecond)
		}
		return got
	}
	got := draw(frame.NewDict("proxy", true, "rgb_format", "BGRX"))
	if len(got) != 1 || got[0].Type() != "draw" {
		t.Fatalf("video draw: %s", words(got))
	}
	if enc, _ := frame.AsText(got[0][6]); enc != "h264" {
		t.Errorf("the proxy's draw is %q, want h264", enc)
	}
	got = draw(frame.NewDict("rgb_format", "BGRX"))
	if enc, _ := frame.AsText(got[0][6]); enc != "rgb32" {
		t.Errorf("a plain draw became %q", enc)
	}
	p.fromServer(frame.Packet{"lost-window", 1})
}
