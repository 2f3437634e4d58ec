package relay_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/video"
)

var _ relay.VideoPool = (*fakePool)(nil)

// fakePool is a relay.VideoPool without an encoder (no cgo): it "encodes"
// every frame to its window key's bytes, or refuses all as a full pool.
type fakePool struct {
	full bool

	mu     sync.Mutex
	closed []uint64
}

func (f *fakePool) Name() string        { return "fake" }
func (f *fakePool) Encodings() []string { return []string{"h264"} }
func (f *fakePool) Submit(fr *video.Frame, done func(video.Result)) error {
	if f.full {
		return errors.New("fake pool full")
	}
	go done(video.Result{Frame: fr, Encoding: "h264", Data: []byte("encoded"), Options: map[string]any{"frame": int64(0)}})
	return nil
}
func (f *fakePool) CloseWindow(key uint64) {
	f.mu.Lock()
	f.closed = append(f.closed, key)
	f.mu.Unlock()
}

// The relay's side of proxy video through the VideoPool interface: the
// server is offered the pool's encodings, a proxy=True draw goes to the
// pool and its result to the client, a full pool passes the pixels as
// plain RGB, and lost-window frees the window's state.
func TestProxyVideoPool(t *testing.T) {
	for _, full := range []bool{false, true} {
		pool := &fakePool{full: full}
		srv := server(t)
		cfg := config(users(t, srv.URL()))
		cfg.Video = pool
		p := newPeer(t, cfg)
		p.login(with(xpratest.Hello("foo"), "encodings", []any{"h264", "rgb24"}), "bar")
		if !p.s.Relaying() {
			t.Fatalf("not relaying: %s", words(p.seen))
		}
		p.h.Server.Packets(t)
		if hs := srv.Hellos(); len(hs) != 1 || !hs[0].Has("encoding.proxy.video") {
			t.Errorf("full=%v: the server's hello offers no proxy video", full)
		}
		px := make([]byte, 16*16*4)
		w := frame.Writer{Encoding: frame.Rencode}
		b, err := w.AppendPacket(nil, frame.Packet{"draw", 1, 0, 0, 16, 16, "rgb32", frame.Compressed{Data: px}, 5, 64,
			frame.NewDict("proxy", true, "rgb_format", "BGRX")})
		if err != nil {
			t.Fatal(err)
		}
		p.h.Server.Feed(b)
		p.s.ServerTraffic(p.now)
		var got []frame.Packet
		for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
			p.h.Run(t, 5*time.Second)
			got = p.c.Packets(t)
			time.Sleep(5 * time.Millisecond)
		}
		want, data := "h264", "encoded"
		if full {
			want, data = "rgb32", string(px)
		}
		if len(got) != 1 || got[0].Type() != "draw" {
			t.Fatalf("full=%v: the draw reached the client as %s", full, words(got))
		}
		enc, _ := frame.AsText(got[0][6])
		pixels, _ := frame.AsBytes(got[0][7])
		if enc != want || string(pixels) != data {
			t.Errorf("full=%v: the client's draw is %q with %d bytes, want %q with %d", full, enc, len(pixels), want, len(data))
		}
		if v, _ := p.s.Summary().Get("video"); v == nil || !v.(frame.Dict).Has("backend") {
			t.Errorf("full=%v: no video in the session's summary: %v", full, p.s.Summary())
		}
		p.fromServer(frame.Packet{"lost-window", 1})
		pool.mu.Lock()
		if len(pool.closed) != 1 || pool.closed[0]&0xFFFFF != 1 {
			t.Errorf("full=%v: lost-window closed %v", full, pool.closed)
		}
		pool.mu.Unlock()
		p.s.Stop("done")
	}
}
