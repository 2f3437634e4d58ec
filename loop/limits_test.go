package loop

// Many sessions at once, and the bounds on what they hold: slow readers,
// idle sessions, the global buffer budget.

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Many clients log in and relay at once: exercised under -race.
func TestConcurrentSessions(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}, Options{Loops: 2})
	const clients = 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			tc := newTestClient(c, nil)
			tc.Writer = frame.Writer{Encoding: frame.Rencode}
			h := hello("foo")
			tc.send(frame.Packet{"hello", h})
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			p, err := tc.ReadPacket()
			if err != nil || p.Type() != "challenge" {
				errs <- fmt.Errorf("client %d: challenge: %v %v", i, p, err)
				return
			}
			d, _ := frame.AsText(p[3])
			sd, _ := frame.AsText(p[4])
			resp, cs, _ := authn.Response([]byte("bar"), p[1].([]byte), authn.Digest(d), authn.Digest(sd))
			h.Set("challenge_response", string(resp))
			h.Set("challenge_client_salt", cs)
			tc.send(frame.Packet{"hello", h})
			if p, err = tc.ReadPacket(); err != nil || p.Type() != "hello" {
				errs <- fmt.Errorf("client %d: hello: %v %v", i, p, err)
				return
			}
			tc.send(frame.Packet{"stream", 5, 20_000})
			sum := sha256.New()
			for j := range 5 {
				p, err := tc.ReadPacket()
				if err != nil || p.Type() != "draw" {
					errs <- fmt.Errorf("client %d: draw %d: %v", i, j, err)
					return
				}
				sum.Write(p[7].([]byte))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := srv.Sessions(); n != 0 {
		t.Errorf("%d sessions left after every client closed", n)
	}
}

// A client that stops reading while the server streams: the proxy stops
// reading the server (flow control) instead of buffering, so what it
// holds stays near the high-water mark; nothing is cut, another session
// keeps working, and once the client reads it gets every draw intact.
func TestSlowReaderSlowed(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}, Options{})
	slow := dialProxy(t, addr)
	if p := slow.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	other := dialProxy(t, addr)
	if p := other.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	const draws, size = 100, 250_000
	slow.send(frame.Packet{"stream", draws, size}) // 25 MB the client does not read for 2 s
	var peak int64
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		peak = max(peak, srv.Buffered())
		select {
		case <-fs.Ended():
			t.Fatal("the slow session was ended")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// High-water mark, one step and one read of the socket, with room.
	if peak > 1<<20 {
		t.Errorf("peak buffered %d bytes while the client did not read", peak)
	}
	if srv.Parks() == 0 {
		t.Error("the server's socket was never parked")
	}
	other.send(frame.Packet{"ping", 1, 2, "x"})
	if p := other.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("other session: %v", p)
	}
	slow.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := range draws {
		p, err := slow.ReadPacket()
		if err != nil {
			t.Fatalf("draw %d: %v", i, err)
		}
		if p.Type() != "draw" {
			t.Fatalf("draw %d: got %v", i, p.Type())
		}
		data, _ := p[7].([]byte)
		if len(data) != size || data[0] != byte(i) || data[size-1] != byte(i) || p[8] != int64(i) {
			t.Fatalf("draw %d: %d bytes, first %d, seq %v", i, len(data), data[0], p[8])
		}
	}
}

// A client that reads nothing at all is cut after the stall timeout,
// with the reason, and the proxy never held more than the window.
func TestStalledReaderCut(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"),
		Limits: relay.Limits{StallTimeout: time.Second}}, Options{})
	slow := dialProxy(t, addr)
	if p := slow.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	slow.send(frame.Packet{"stream", 400, 250_000})
	var peak int64
	start := time.Now()
	ended := false
	for time.Since(start) < 20*time.Second && !ended {
		peak = max(peak, srv.Buffered())
		select {
		case <-fs.Ended():
			ended = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !ended {
		t.Fatalf("the stalled session was never ended (peak buffered %d)", peak)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("cut after %v, before the stall timeout", d)
	}
	if peak > 1<<20 {
		t.Errorf("peak buffered %d bytes", peak)
	}
	// The client finds the reason at the end of what was relayed.
	slow.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var last frame.Packet
	for {
		p, err := slow.ReadPacket()
		if err != nil {
			break
		}
		last = p
	}
	expectDisconnect(t, last, "connection too slow")
}

func TestIdleTimeout(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Limits: relay.Limits{IdleTimeout: 400 * time.Millisecond}}, Options{})
	tc := dialProxy(t, addr)
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	start := time.Now()
	expectDisconnect(t, tc.recv(t), "idle timeout")
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("idle disconnect after %v", d)
	}
	select {
	case <-fs.Ended():
	case <-time.After(5 * time.Second):
		t.Error("the server side of the idle session stayed open")
	}
}

// Over the global budget the sessions holding the most are shed first,
// while a quiet session stays: a budget smaller than what a few paused
// sessions hold.
func TestGlobalBudget(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")},
		Options{MaxBufferTotal: 256 << 10})
	quiet := dialProxy(t, addr)
	if p := quiet.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	for range 4 {
		hog := dialProxy(t, addr)
		if p := hog.login(t, "foo", "bar"); p.Type() != "hello" {
			t.Fatal(p)
		}
		hog.send(frame.Packet{"stream", 400, 250_000})
	}
	select {
	case <-fs.Ended():
	case <-time.After(20 * time.Second):
		t.Fatalf("nothing was shed; buffered %d", srv.Buffered())
	}
	quiet.send(frame.Packet{"ping", 1, 2, "x"})
	if p := quiet.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("quiet session: %v", p)
	}
}

// A client that uploads faster than its server reads, over each of the
// one port's transports: the proxy stops reading the client (under its
// TLS and WebSocket layers too) while the server naps, holds no more
// than the window, and every byte arrives once the server reads again.
func TestUploadSlowed(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startOnePortServer(t, fs, "")
	plain := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tlsDial := func() net.Conn {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var want int64
	for _, tr := range []struct {
		name string
		dial func() *testClient
	}{
		{"tcp", func() *testClient { return dialProxy(t, addr) }},
		{"tls", func() *testClient {
			c := tlsDial()
			t.Cleanup(func() { c.Close() })
			return newTestClient(c, nil)
		}},
		{"ws", func() *testClient { return dialWS(t, plain(), true) }},
		{"wss", func() *testClient { return dialWS(t, tlsDial(), true) }},
	} {
		t.Run(tr.name, func(t *testing.T) {
			tc := tr.dial()
			tc.Writer = frame.Writer{Encoding: frame.Rencode}
			if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
				t.Fatal(p)
			}
			tc.Conn.SetDeadline(time.Now().Add(60 * time.Second))
			const uploads, size = 40, 256 << 10
			tc.send(frame.Packet{"nap", 1500})
			sent := make(chan error, 1)
			go func() {
				data := make([]byte, size)
				for range uploads {
					if err := tc.send(frame.Packet{"upload", data}); err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()
			want += uploads * size
			parks := srv.Parks()
			var peak int64
			deadline := time.Now().Add(30 * time.Second)
			for fs.Uploaded() < want && time.Now().Before(deadline) {
				peak = max(peak, srv.Buffered())
				time.Sleep(10 * time.Millisecond)
			}
			if peak > 1<<20 {
				t.Errorf("peak buffered %d bytes while the server napped", peak)
			}
			if srv.Parks() == parks {
				t.Error("the client's socket was never parked")
			}
			if got := fs.Uploaded(); got != want {
				t.Fatalf("the server received %d upload bytes of %d", got, want)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			tc.send(frame.Packet{"ping", 1, 2, "x"})
			if p := tc.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("after the upload: %v", p)
			}
		})
	}
}
