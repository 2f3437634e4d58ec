package loop

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/relay"
)

// rootRoad is a root proxy's road in one process: a main server whose
// listener hands every logged-in client to a worker server (Adopt), as
// privsep does across processes.
type rootRoad struct {
	addr         string
	main, worker *Server
}

func startRootRoad(t *testing.T, target string, mainOpts Options) *rootRoad {
	t.Helper()
	return startRootRoadLimits(t, target, mainOpts, nil)
}

// startRootRoadLimits is startRootRoad with tune applied to both
// servers' limits.
func startRootRoadLimits(t *testing.T, target string, mainOpts Options, tune func(*relay.Limits)) *rootRoad {
	t.Helper()
	tlsCfg, err := selfsigned.Config()
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	limits := relay.Limits{LoginTimeout: 5 * time.Second, ChallengeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second,
		MaxPacketSize: 16 << 20, MaxSessionBuffer: 32 << 20}
	if tune != nil {
		tune(&limits)
	}
	wcfg := &relay.Config{Limits: limits, Log: quiet, Generations: &relay.Generations{}, Connects: &relay.ConnectLimiter{}}
	refuse := *wcfg
	worker := New([]Listener{{Network: "unix", Address: filepath.Join(t.TempDir(), "refuse"), Config: &refuse}},
		Options{Config: wcfg, FirstID: 1 << 48})
	werr := make(chan error, 1)
	go func() { werr <- worker.Run() }()
	<-worker.Ready()
	t.Cleanup(func() { worker.Stop(context.Background()); <-werr })

	cfg := relay.Config{Limits: limits, Log: quiet, Modules: multifile(t, "foo|bar|65534|65534|"+target),
		HandOff: func(h *relay.Handoff, _ authn.Account, f *os.File) error {
			defer f.Close()
			nc, err := net.FileConn(f)
			if err != nil {
				return err
			}
			return worker.Adopt(h, nc)
		}}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort())
	if mainOpts.HTTPTimeout == 0 {
		mainOpts.HTTPTimeout = 2 * time.Second
	}
	main := New([]Listener{{Network: "tcp", Address: addr, Kind: "tcp", Config: &cfg, TLS: tlsCfg}}, mainOpts)
	merr := make(chan error, 1)
	go func() { merr <- main.Run() }()
	<-main.Ready()
	t.Cleanup(func() { main.Stop(context.Background()); <-merr })
	return &rootRoad{addr: addr, main: main, worker: worker}
}

func statInt(d frame.Dict, key string) int64 {
	v, _ := d.Int(key)
	return v
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// As root, a TLS client's record layer stays on the main process's loop
// and its plaintext reaches the worker through a splice: no goroutine per
// session, records cut anywhere and big draws both ways, and both sides
// let go when the client leaves.
func TestRootTLSSplice(t *testing.T) {
	fs := startFakeServer(t, "")
	road := startRootRoad(t, "tcp://"+fs.Addr()+"/", Options{})
	const sessions = 6
	var clients []*testClient
	for i := range sessions {
		var wrap func(net.Conn) net.Conn
		if i%2 == 1 {
			wrap = func(c net.Conn) net.Conn { return dribbleConn{c, 1 + i*7, new(int)} }
		}
		tc := tlsClient(t, road.addr, wrap)
		if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
			t.Fatalf("login %d: %s", i, p)
		}
		clients = append(clients, tc)
	}
	for i, tc := range clients {
		bigBothWays(t, i, tc)
	}
	if got := statInt(road.main.Stats(), "spliced"); got != sessions {
		t.Errorf("main process: %d spliced connections, want %d", got, sessions)
	}
	if got := road.main.Sessions(); got != 0 {
		t.Errorf("main process relays %d sessions itself", got)
	}
	if got := road.worker.Sessions(); got != sessions {
		t.Errorf("worker: %d sessions, want %d", got, sessions)
	}
	infos := road.worker.SessionsInfo()
	if len(infos) != sessions {
		t.Errorf("worker lists %d sessions, want %d", len(infos), sessions)
	}
	for _, kv := range infos {
		d, _ := kv.Value.(frame.Dict)
		if u, _ := d.Text("user"); u != "foo" {
			t.Errorf("worker's session %v: user %q", kv.Key, u)
		}
		if c, _ := d.Dict("client"); c == nil || func() bool { v, _ := c.Bool("tls"); return !v }() {
			t.Errorf("worker's session %v does not say its client's link is TLS: %v", kv.Key, d)
		}
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, f := range []string{"startLoopTLS", "relay.Bridge", "relay.pump", "bridgeTLS"} {
		if strings.Contains(stacks, f) {
			t.Errorf("a goroutine in %s with %d spliced TLS sessions:\n%s", f, sessions, stacks)
		}
	}
	for _, tc := range clients {
		tc.Conn.Close()
	}
	waitFor(t, "the splices to end", func() bool { return statInt(road.main.Stats(), "spliced") == 0 })
	waitFor(t, "the worker's sessions to end", func() bool { return road.worker.Sessions() == 0 })
	if n := statInt(road.main.Stats(), "connections"); n != 0 {
		t.Errorf("main process still counts %d connections", n)
	}
}

// The worker applies the masking rule the main process decided at the
// upgrade: a browser (Origin) that masks while logging in and then sends
// an unmasked frame is closed with a reason, over ws and over wss, and
// --websocket-require-mask holds after the handoff for clients without
// an Origin.
func TestRootWebSocketMasking(t *testing.T) {
	fs := startFakeServer(t, "")
	target := "tcp://" + fs.Addr() + "/"
	for _, tc := range []struct {
		name                 string
		requireMask, origin  bool
		overTLS, unmaskLater bool
		closed               bool
	}{
		{name: "browser ws", origin: true, unmaskLater: true, closed: true},
		{name: "browser wss", origin: true, overTLS: true, unmaskLater: true, closed: true},
		{name: "python client ws", unmaskLater: true, closed: false},
		{name: "require-mask ws", requireMask: true, unmaskLater: true, closed: true},
		{name: "require-mask wss masked", requireMask: true, overTLS: true, closed: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			road := startRootRoad(t, target, Options{WSRequireMask: tc.requireMask})
			c, err := net.Dial("tcp", road.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.overTLS {
				c = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			}
			d := ws.Dialer{Protocols: []string{"binary"}, NetDial: func(context.Context, string, string) (net.Conn, error) { return c, nil }}
			if tc.origin {
				d.Header = ws.HandshakeHeaderHTTP(http.Header{"Origin": []string{"https://127.0.0.1"}})
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, _, err := d.Upgrade(c, mustURL("ws://127.0.0.1/")); err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			masked := tc.origin || tc.requireMask
			s := &wsStream{c: c, masked: masked, r: &wsutil.Reader{Source: c, State: ws.StateClientSide}}
			cl := newTestClient(c, s)
			if p := cl.login(t, "foo", "bar"); p.Type() != "hello" {
				t.Fatalf("login: %s", p)
			}
			waitFor(t, "the worker's session", func() bool { return road.worker.Sessions() == 1 })
			if tc.unmaskLater {
				s.masked = false
			}
			cl.send(frame.Packet{"ping", 1, 0, "x"})
			p, err := cl.ReadPacket()
			switch {
			case tc.closed && (err != nil || p.Type() != "disconnect" || !strings.Contains(packetText(p), "unmasked")):
				t.Errorf("an unmasked frame after the handoff: %v %v, want a disconnect naming it", p, err)
			case !tc.closed && (err != nil || p.Type() != "ping_echo"):
				t.Errorf("ping after the handoff: %v %v", p, err)
			}
		})
	}
}
