package loop

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/relay"
)

// evictedLine is what an evicted connection reads before its hello.
const evictedLine = "disconnect: " + evictReason + ", " + evictDetail

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// halfHello is a hello frame's header and the first bytes of a payload
// that never comes whole.
var halfHello = append(frame.Header{Flags: frame.FlagRencode, Size: 1000}.Append(nil), make([]byte, 100)...)

// A crowd of 100 addresses in ten /24s holding half-hellos (and
// reconnecting when evicted) keeps the pre-login cap full; a correct
// login from a fresh address still gets in within a second, again and
// again, the evicted read why, and a relaying neighbour is untouched.
func TestCrowdCannotLockOut(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")},
		Options{MaxLoginConnections: 60, MaxLoginsPerSource: 16})
	neighbour := dialProxy(t, addr)
	if p := neighbour.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}

	var (
		stop             = make(chan struct{})
		wg               sync.WaitGroup
		mu               sync.Mutex
		open             = map[net.Conn]bool{}
		evicted, strange atomic.Int64
		firstStrange     atomic.Value
	)
	for i := range 100 {
		src := fmt.Sprintf("127.0.%d.%d", 10+i/10, 1+i%10)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				mu.Lock()
				open[c] = true
				mu.Unlock()
				c.Write(halfHello)
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				b, _ := io.ReadAll(c)
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				c.Close()
				select {
				case <-stop:
					return
				default:
				}
				switch got := string(b); {
				case strings.HasPrefix(got, evictedLine):
					evicted.Add(1)
				default:
					strange.Add(1)
					firstStrange.CompareAndSwap(nil, got)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	defer func() {
		close(stop)
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Counters().Evicted < 40 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := srv.Counters().LoggingIn; n < 55 {
		t.Fatalf("the crowd holds %d pre-login places, not the cap", n)
	}
	for i := range 8 {
		start := time.Now()
		c := dialFrom(t, fmt.Sprintf("127.0.200.%d", 1+i), addr)
		tc := newTestClient(c, nil)
		p, err := tc.Login("foo", "bar", hello("foo"))
		if d := time.Since(start); err != nil || p.Type() != "hello" || d > time.Second {
			t.Errorf("login %d under the crowd: %v %s after %v", i, err, packetText(p), d)
		}
		c.Close()
		time.Sleep(200 * time.Millisecond)
	}
	if n := evicted.Load(); n == 0 {
		t.Error("no crowd connection read why it was evicted")
	}
	if n := strange.Load(); n > 0 {
		t.Errorf("%d crowd connections read something else, such as %q", n, firstStrange.Load())
	}
	neighbour.send(frame.Packet{"ping", 1, 2, "x"})
	if p := neighbour.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("the neighbour: %v", packetText(p))
	}
	t.Logf("%d evictions, %d read by the crowd", srv.Counters().Evicted, evicted.Load())
}

// Each kind of pre-login connection is evictable and told so in its own
// terms: a hello'd client an xpra disconnect packet, an HTTP request in
// progress a 503, a TLS handshake a close; an authenticated one never.
func TestEvictionByRole(t *testing.T) {
	fs := startFakeServer(t, "")
	tlsCfg, err := selfsigned.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Limits: relay.Limits{LoginTimeout: 10 * time.Second, ChallengeTimeout: 10 * time.Second, ConnectTimeout: 5 * time.Second, MaxPacketSize: 1 << 20}}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort())
	srv := New([]Listener{{Network: "tcp", Address: addr, Kind: "tcp", Config: &cfg, TLS: tlsCfg}}, Options{MaxLoginConnections: 1})
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	<-srv.Ready()
	t.Cleanup(func() { srv.Stop(context.Background()); <-errc })
	read := func(c net.Conn) string {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	// waitQueued waits until one connection is queued, at stage st.
	waitQueued := func(st stage) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			var stages []stage
			srv.adm.mu.Lock()
			n := srv.adm.n
			for _, g := range srv.adm.groups {
				for _, q := range g.q {
					for _, w := range q {
						stages = append(stages, w.stage)
					}
				}
			}
			srv.adm.mu.Unlock()
			if n == 1 && len(stages) == 1 && stages[0] == st {
				return
			}
		}
		t.Fatalf("no connection reached stage %d", st)
	}

	// A hello'd client waiting on its challenge: a disconnect packet.
	a := newTestClient(dialFrom(t, "127.0.1.1", addr), nil)
	defer a.Close()
	a.send(frame.Packet{"hello", hello("foo")})
	if p := a.recv(t); p.Type() != "challenge" {
		t.Fatal(packetText(p))
	}
	waitQueued(stageHello)
	// An HTTP request head in progress evicts it, and is evicted in turn.
	h := dialFrom(t, "127.0.2.1", addr)
	defer h.Close()
	h.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n"))
	if p, err := a.Recv(5 * time.Second); err != nil || p.Type() != "disconnect" || !strings.Contains(packetText(p), evictReason) {
		t.Errorf("hello'd client: %v %s", err, packetText(p))
	}
	waitQueued(stageBytes)
	// A TLS handshake in progress.
	hs := dialFrom(t, "127.0.3.1", addr)
	defer hs.Close()
	hs.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc})
	if got := read(h); !strings.HasPrefix(got, "HTTP/1.1 503") || !strings.Contains(got, evictDetail) {
		t.Errorf("HTTP request: %q", got)
	}
	waitQueued(stageBytes)
	// A TLS client that logs in: its handshake ends, the bytes are read.
	tc := tlsClient(t, addr, nil)
	if got := read(hs); got != "" {
		t.Errorf("TLS handshake: %q", got)
	}
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(packetText(p))
	}
	// A silent client.
	silent := dialFrom(t, "127.0.4.1", addr)
	defer silent.Close()
	waitQueued(stageNew)
	late := dialFrom(t, "127.0.5.1", addr)
	defer late.Close()
	if got := read(silent); !strings.HasPrefix(got, evictedLine) {
		t.Errorf("silent client: %q", got)
	}
	if n := srv.Counters().Evicted; n != 4 {
		t.Errorf("%d evictions counted, want 4", n)
	}
}
