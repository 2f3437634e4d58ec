package loop

import (
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// pipeStream is a Stream over one end of net.Pipe (synchronous, no
// descriptor: what an SSH channel or a QUIC stream looks like to the
// loop); the test's client has the other end.
func pipeStream(t *testing.T) (Stream, *testClient) {
	ours, theirs := net.Pipe()
	t.Cleanup(func() { ours.Close(); theirs.Close() })
	return ours, newTestClient(theirs, nil)
}

var streamAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 4242}

// stacksWith counts the goroutines whose stack names f.
func stacksWith(f string) int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), f)
}

// A stream (no descriptor) logs in and relays like a socket: pings, big
// draws through the bounded read window, and its goroutines go with it.
func TestStreamSeam(t *testing.T) {
	fs := startFakeServer(t, "")
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}
	_, srv := startProxy(t, cfg, Options{})
	st, tc := pipeStream(t)
	if err := srv.ServeStream(st, StreamOptions{Remote: streamAddr, Config: srv.listeners[0].Config}); err != nil {
		t.Fatal(err)
	}
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %s", p)
	}
	big := strings.Repeat("x", 3*streamWindow) // more than the window: the reader must wait and go on
	tc.send(frame.Packet{"ping", 1, 0, big})
	if p := tc.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("ping: %s", p)
	}
	const n, size = 4, 500_000
	tc.send(frame.Packet{"stream", n, size})
	for k := range n {
		p := tc.recv(t)
		if px, _ := p[7].([]byte); p.Type() != "draw" || len(px) != size || px[size-1] != byte(k) {
			t.Fatalf("draw %d: %s", k, p)
		}
	}
	infos := srv.SessionsInfo()
	if len(infos) != 1 {
		t.Fatalf("%d sessions listed", len(infos))
	}
	d, _ := infos[0].Value.(frame.Dict)
	if c, _ := d.Dict("client"); c == nil || !strings.Contains(func() string { p, _ := c.Text("peer"); return p }(), "127.0.0.9") {
		t.Errorf("the stream's session does not show its client's address: %v", d)
	}
	waitFor(t, "an idle stream's writer to end", func() bool { return stacksWith("streamConn).writeLoop") == 0 })
	tc.Conn.Close()
	waitFor(t, "the session to end", func() bool { return srv.Sessions() == 0 })
	waitFor(t, "the stream's goroutines to end", func() bool {
		return stacksWith("streamConn).readLoop") == 0 && stacksWith("streamConn).writeLoop") == 0
	})
	if n := statInt(srv.Stats(), "connections"); n != 0 {
		t.Errorf("%d connections still counted", n)
	}
}

// The connection caps count streams: past the per-address cap a stream
// gets xpra's plain-text refusal and is closed.
func TestStreamCaps(t *testing.T) {
	fs := startFakeServer(t, "")
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}
	_, srv := startProxy(t, cfg, Options{MaxLoginsPerSource: 1})
	first, _ := pipeStream(t)
	if err := srv.ServeStream(first, StreamOptions{Remote: streamAddr, Config: srv.listeners[0].Config}); err != nil {
		t.Fatal(err)
	}
	second, tc := pipeStream(t)
	if err := srv.ServeStream(second, StreamOptions{Remote: streamAddr, Config: srv.listeners[0].Config}); err == nil {
		t.Fatal("a second stream from the same address was admitted past the cap")
	}
	tc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(tc.Conn)
	if !strings.Contains(string(b), "disconnect: too many connections waiting to log in from your address") {
		t.Errorf("refused stream read %q", b)
	}
}

// As root, a stream's session goes to a worker through a splice: the
// transport stays in the main process.
func TestRootStreamSplice(t *testing.T) {
	fs := startFakeServer(t, "")
	road := startRootRoad(t, "tcp://"+fs.Addr()+"/", Options{})
	st, tc := pipeStream(t)
	if err := road.main.ServeStream(st, StreamOptions{Remote: streamAddr, Config: road.main.listeners[0].Config}); err != nil {
		t.Fatal(err)
	}
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %s", p)
	}
	tc.send(frame.Packet{"ping", 1, 0, strings.Repeat("y", 200_000)})
	if p := tc.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("ping: %s", p)
	}
	tc.send(frame.Packet{"stream", 2, 400_000})
	for k := range 2 {
		if p := tc.recv(t); p.Type() != "draw" {
			t.Fatalf("draw %d: %s", k, p)
		}
	}
	if got := statInt(road.main.Stats(), "spliced"); got != 1 {
		t.Errorf("main process: %d spliced, want 1", got)
	}
	if got := road.worker.Sessions(); got != 1 {
		t.Errorf("worker: %d sessions, want 1", got)
	}
	tc.Conn.Close()
	waitFor(t, "the splice to end", func() bool { return statInt(road.main.Stats(), "spliced") == 0 })
	waitFor(t, "the worker's session to end", func() bool { return road.worker.Sessions() == 0 })
}
