package loop

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
)

// dribbleConn writes its first 12 KB in small pieces with pauses, so
// that TLS records (the ClientHello included) reach the proxy cut
// anywhere.
type dribbleConn struct {
	net.Conn
	piece int
	sent  *int
}

func (d dribbleConn) Write(p []byte) (int, error) {
	if *d.sent > 12<<10 {
		return d.Conn.Write(p)
	}
	*d.sent += len(p)
	sent := 0
	for len(p) > 0 {
		k := min(len(p), d.piece)
		n, err := d.Conn.Write(p[:k])
		sent += n
		if err != nil {
			return sent, err
		}
		p = p[k:]
		time.Sleep(200 * time.Microsecond)
	}
	return sent, nil
}

func tlsClient(t *testing.T, addr string, wrap func(net.Conn) net.Conn) *testClient {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		raw = wrap(raw)
	}
	return tlsOver(t, raw, &tls.Config{InsecureSkipVerify: true})
}

// tlsClientConfig is a TLS client of addr with the client config cfg.
func tlsClientConfig(t *testing.T, addr string, cfg *tls.Config) *testClient {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return tlsOver(t, raw, cfg)
}

func tlsOver(t *testing.T, raw net.Conn, cfg *tls.Config) *testClient {
	c := tls.Client(raw, cfg)
	t.Cleanup(func() { c.Close() })
	tc := newTestClient(c, nil)
	tc.Writer = frame.Writer{Encoding: frame.Rencode}
	return tc
}

// bigBothWays sends client i a ping of several records (cut by a
// dribbling client anywhere) and asks its server for three 300 KB
// draws: each must come back whole.
func bigBothWays(t *testing.T, i int, tc *testClient) {
	t.Helper()
	tc.send(frame.Packet{"ping", i, 0, strings.Repeat("x", 100_000+i)})
	if p := tc.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("ping %d: %s", i, p)
	}
	const n, size = 3, 300_000
	tc.send(frame.Packet{"stream", n, size})
	for k := range n {
		p := tc.recv(t)
		if px, _ := p[7].([]byte); p.Type() != "draw" || len(px) != size || px[size-1] != byte(k) {
			t.Fatalf("session %d draw %d: %s", i, k, p)
		}
	}
}

// The record layer runs on the loop: records cut anywhere, in both
// directions, big packets and small, and no goroutine stays behind once
// the sessions run.
func TestLoopTLS(t *testing.T) {
	fs := startFakeServer(t, "")
	addr := startOnePort(t, fs, "")
	const sessions = 20
	var clients []*testClient
	for i := range sessions {
		var wrap func(net.Conn) net.Conn
		if i%2 == 1 {
			wrap = func(c net.Conn) net.Conn { return dribbleConn{c, 1 + i*7, new(int)} }
		}
		tc := tlsClient(t, addr, wrap)
		if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
			t.Fatalf("login %d: %s", i, p)
		}
		clients = append(clients, tc)
	}
	for i, tc := range clients {
		bigBothWays(t, i, tc)
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, f := range []string{"startLoopTLS", "relay.Bridge", "relay.pump", "bridgeTLS"} {
		if strings.Contains(stacks, f) {
			t.Errorf("a goroutine in %s with %d TLS sessions running:\n%s", f, sessions, stacks)
		}
	}
}

// A handshake is bounded in time and in the bytes it may be sent, and a
// broken one ends only its own connection.
func TestLoopTLSHandshakeBounds(t *testing.T) {
	fs := startFakeServer(t, "")
	addr := startOnePort(t, fs, "")
	survivor := tlsClient(t, addr, nil)
	if p := survivor.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %s", p)
	}
	closedWithin := func(name string, c net.Conn, d time.Duration) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(d))
		// EOF, or a reset when the proxy closed with bytes unread.
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: not closed within %s: %v", name, d, err)
		}
	}
	// Half a ClientHello, then silence: the handshake timeout (1 s here).
	half, _ := net.Dial("tcp", addr)
	defer half.Close()
	half.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc})
	closedWithin("silent handshake", half, 5*time.Second)
	// A record header that promises a handshake, then a flood.
	flood, _ := net.Dial("tcp", addr)
	defer flood.Close()
	go func() {
		flood.Write([]byte{0x16, 0x03, 0x01, 0x40, 0x00})
		junk := make([]byte, 16<<10)
		for range 64 {
			if _, err := flood.Write(junk); err != nil {
				return
			}
		}
	}()
	closedWithin("flood", flood, 5*time.Second)
	// A client that hangs up mid-handshake.
	gone, _ := net.Dial("tcp", addr)
	gone.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
	gone.Close()
	survivor.send(frame.Packet{"ping", 1, 0, "still here"})
	if p := survivor.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("the session beside: %s", p)
	}
}
