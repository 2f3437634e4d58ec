package loop

// Many sessions at once, and the bounds on what they hold: slow readers,
// idle sessions, the global buffer budget.

import (
	"crypto/sha256"
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

// A client that stops reading while the server streams: the session is
// ended at its buffer limit, the proxy's buffers stay bounded, and another
// session keeps working.
func TestSlowReaderBounded(t *testing.T) {
	fs := startFakeServer(t, "")
	const limit = 8 << 20
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Limits: relay.Limits{MaxSessionBuffer: limit}}, Options{})
	slow := dialProxy(t, addr)
	if p := slow.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	other := dialProxy(t, addr)
	if p := other.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	slow.send(frame.Packet{"stream", 400, 250_000}) // 100 MB the slow client never reads
	var peak int64
	deadline := time.Now().Add(20 * time.Second)
	ended := false
	for time.Now().Before(deadline) && !ended {
		if b := srv.Buffered(); b > peak {
			peak = b
		}
		select {
		case <-fs.Ended():
			ended = true
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !ended {
		t.Fatalf("the slow session was never ended (peak buffered %d)", peak)
	}
	if peak > 2*limit {
		t.Errorf("peak buffered %d bytes for a %d limit", peak, limit)
	}
	other.send(frame.Packet{"ping", 1, 2, "x"})
	if p := other.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("other session: %v", p)
	}
	// The slow client finds the reason at the end of what was relayed.
	slow.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var (
		last  frame.Packet
		count int
		rerr  error
	)
	for {
		p, err := slow.ReadPacket()
		if err != nil {
			rerr = err
			break
		}
		last = p
		count++
	}
	if last.Type() != "disconnect" {
		t.Logf("read %d packets, then %v", count, rerr)
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
// while a quiet session stays.
func TestGlobalBudget(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Limits: relay.Limits{MaxSessionBuffer: 1 << 30}},
		Options{MaxBufferTotal: 16 << 20})
	quiet := dialProxy(t, addr)
	if p := quiet.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	hog := dialProxy(t, addr)
	if p := hog.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	hog.send(frame.Packet{"stream", 400, 250_000})
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
