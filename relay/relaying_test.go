package relay_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// What the pipes see or rewrite while relaying, pools, the proxy's own
// pings, and the ways the reactor ends a session.

// relaying logs p in as foo/bar (a target must be configured) and fails
// the test unless it relays.
func relaying(t *testing.T, cfg *relay.Config) *peer {
	t.Helper()
	p := newPeer(t, cfg)
	p.login(with(xpratest.Hello("foo"), "ping-echo-sourceid", true), "bar")
	if !p.s.Relaying() {
		t.Fatalf("not relaying: %s", words(p.seen))
	}
	p.h.Server.Packets(t) // what the login sent
	return p
}

// fromServer feeds a packet from the backend and returns what the client
// was sent.
func (p *peer) fromServer(pkt frame.Packet) []frame.Packet {
	p.t.Helper()
	p.h.Server.FeedPacket(p.t, p.w, pkt)
	p.s.ServerTraffic(p.now)
	return p.c.Packets(p.t)
}

func TestRelayedControlPackets(t *testing.T) {
	srv := server(t)
	cfg := config(users(t, srv.URL()))

	p := relaying(t, cfg)
	// A server's info-response gets the proxy's part.
	got := words(p.fromServer(frame.Packet{"info-response", frame.NewDict("server", frame.NewDict("type", "xpra"))}))
	if !strings.Contains(got, "info-response") || !strings.Contains(got, "proxy") || !strings.Contains(got, "xpra") {
		t.Errorf("info-response: %s", got)
	}
	// A second hello from the server is filtered again; a client's is dropped.
	if got := words(p.fromServer(frame.Packet{"hello", frame.NewDict("version", "3.1.3", "aliases", frame.NewDict("x", 1))})); strings.Contains(got, "aliases") || !strings.Contains(got, "xpraproxy") {
		t.Errorf("server hello while relaying: %s", got)
	}
	p.send(frame.Packet{"hello", xpratest.Hello("foo")})
	if got := words(p.h.Server.Packets(t)); strings.Contains(got, "hello") {
		t.Errorf("a client hello reached the server while relaying: %s", got)
	}
	// A challenge while relaying cannot be answered: the session ends.
	if got := words(p.fromServer(frame.Packet{"challenge", []byte("salt"), "", "hmac+sha256", "hmac+sha256"})); !strings.Contains(got, "the server sent a challenge while relaying") {
		t.Errorf("challenge while relaying: %s", got)
	}

	// The server's disconnect reaches the client as it is.
	p = relaying(t, cfg)
	if got := words(p.fromServer(frame.Packet{"disconnect", "server shutdown", "bye"})); got != "disconnect server shutdown bye" {
		t.Errorf("server disconnect: %s", got)
	}
	// The client's disconnect reaches the server, and the session closes.
	p = relaying(t, cfg)
	p.send(frame.Packet{"disconnect", "client request"})
	if got := words(p.h.Server.Packets(t)); !strings.Contains(got, "disconnect client request") {
		t.Errorf("client disconnect: %s", got)
	}
	p.s.Sweep(p.now.Add(time.Minute))
	if !p.s.Closed() {
		t.Error("not closed after the client's disconnect")
	}
	// Bad frames from the server end the session with a reason.
	p = relaying(t, cfg)
	p.h.Server.Feed([]byte("PPPPPPPPPPPPPPPP"))
	p.s.ServerTraffic(p.now)
	if got := words(p.c.Packets(t)); !strings.Contains(got, "disconnect") {
		t.Errorf("garbage from the server: %s", got)
	}
}

// The reactor's ways to end a session each tell the client why.
func TestSessionEndings(t *testing.T) {
	srv := server(t)
	cfg := config(users(t, srv.URL()))
	for name, end := range map[string]func(s *relay.Session){
		"stop":   func(s *relay.Session) { s.Stop("proxy instance stopped by request") },
		"shed":   func(s *relay.Session) { s.Shed() },
		"reject": func(s *relay.Session) { s.Reject("server error", "going away") },
	} {
		t.Run(name, func(t *testing.T) {
			p := relaying(t, cfg)
			end(p.s)
			if got := words(p.c.Packets(t)); !strings.HasPrefix(got, "disconnect") {
				t.Errorf("%s: %s", name, got)
			}
			if !p.s.Urgent() {
				t.Error("a closing session is not urgent")
			}
			p.s.Sweep(p.now.Add(time.Minute))
			if !p.s.Closed() || p.s.Buffered() != 0 {
				t.Error("not closed")
			}
		})
	}
	p := relaying(t, cfg)
	p.s.OnClientClosed(io.EOF)
	if got := words(p.h.Server.Packets(t)); !strings.Contains(got, "disconnect") {
		t.Errorf("the server was not told the client left: %s", got)
	}
	q := newPeer(t, cfg)
	q.s.Forget()
	if !q.s.Closed() {
		t.Error("Forget")
	}
}

// A pool of two servers: least-sessions spreads two clients, a dead
// member is skipped, a session's end releases its member.
func TestSessionPool(t *testing.T) {
	a, _ := xpratest.StartServer()
	b, _ := xpratest.StartServer()
	defer a.Close()
	defer b.Close()
	pool, err := route.ParsePool("farm:least-sessions:" + a.URL() + "," + b.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg := config(users(t, "pool:farm"))
	cfg.Pools = route.Pools{"farm": pool}
	p1, p2 := relaying(t, cfg), relaying(t, cfg)
	if p1.s.Info() == nil || p2.s.Info() == nil {
		t.Fatal("no info")
	}
	for target, st := range pool.Status() {
		if st[1] != 1 {
			t.Errorf("least-sessions: %s has %d sessions, want 1 each", target, st[1])
		}
	}
	p1.s.Stop("done")
	pool.Release(p1.s.ID)
	b.Close()
	p3 := newPeer(t, cfg)
	p3.login(xpratest.Hello("foo"), "bar")
	if !p3.s.Relaying() {
		t.Errorf("the live member was not used: %s", words(p3.seen))
	}
	if _, err := route.ParsePool("farm:fastest:" + a.URL()); err == nil {
		t.Error("an unknown policy was accepted")
	}
}

// The proxy pings both peers itself; the echoes stay with it.
func TestProxyPings(t *testing.T) {
	srv := server(t)
	cfg := config(users(t, srv.URL()))
	cfg.PingInterval = time.Second
	p := relaying(t, cfg)
	p.s.Sweep(p.now.Add(2 * time.Second))
	toClient := p.c.Packets(t)
	toServer := p.h.Server.Packets(t)
	if len(toClient) != 1 || toClient[0].Type() != "ping" || len(toServer) != 1 || toServer[0].Type() != "ping" {
		t.Fatalf("pings: client %s, server %s", words(toClient), words(toServer))
	}
	// The client's echo carries the proxy's uuid: it is not relayed.
	echo := frame.Packet{"ping_echo", toClient[0][1], 0, 0, 0, 0, toClient[0][3]}
	p.send(echo)
	if got := words(p.h.Server.Packets(t)); strings.Contains(got, "ping_echo") {
		t.Errorf("the proxy's echo reached the server: %s", got)
	}
	if got := words(p.fromServer(frame.Packet{"ping_echo", toServer[0][1], 0, 0, 0, 0, toServer[0][3]})); strings.Contains(got, "ping_echo") {
		t.Errorf("the proxy's echo reached the client: %s", got)
	}
	if got := words([]frame.Packet{{p.s.Info()}}); !strings.Contains(got, "own-echoes") || !strings.Contains(got, "state relay") {
		t.Errorf("echoes not counted: %s", got)
	}
}

// fakeControl is the proxy's view of its connections, for requests on a
// local socket.
type fakeControl struct {
	stopped   []uint64
	shutdown  bool
	reloads   int
	reloadErr string
}

func (f *fakeControl) Info() frame.Dict { return frame.NewDict("sessions", 7) }
func (f *fakeControl) SessionInfo(id uint64) (frame.Dict, bool) {
	return frame.NewDict("id", int64(id)), id == 5
}
func (f *fakeControl) StopSession(id uint64) bool { f.stopped = append(f.stopped, id); return id == 5 }
func (f *fakeControl) Shutdown()                  { f.shutdown = true }
func (f *fakeControl) Reload() (string, error) {
	f.reloads++
	if f.reloadErr != "" {
		return "", errors.New(f.reloadErr)
	}
	return "listeners kept 1", nil
}
func (f *fakeControl) Upgrade() (string, error) { return "new process 2 serves", nil }

// Requests on the proxy's own (local) socket: info of the proxy and of
// one connection, stopping one connection, and xpra stop of the proxy.
func TestLocalRequests(t *testing.T) {
	srv := server(t)
	ctl := &fakeControl{}
	cfg := config(users(t, srv.URL()))
	cfg.Local, cfg.Control, cfg.OwnDisplay = true, ctl, ":100"
	ask := func(extra ...any) string {
		h := xpratest.Hello("foo")
		for i := 0; i+1 < len(extra); i += 2 {
			h.Set(extra[i].(string), extra[i+1])
		}
		p := newPeer(t, cfg)
		return words(p.login(h, "bar"))
	}
	if got := ask("request", "info"); !strings.Contains(got, "sessions 7") {
		t.Errorf("proxy info: %s", got)
	}
	if got := ask("request", "info", "proxy-instance", "proxy-5"); !strings.Contains(got, "id 5") {
		t.Errorf("instance info: %s", got)
	}
	if got := ask("request", "info", "proxy-instance", "proxy-6"); !strings.Contains(got, "disconnect") {
		t.Errorf("unknown instance: %s", got)
	}
	if got := ask("request", "stop", "proxy-instance", ":proxy-5"); !strings.Contains(got, "stopped proxy-5") || len(ctl.stopped) != 1 {
		t.Errorf("instance stop: %s %v", got, ctl.stopped)
	}
	if got := ask("request", "id"); !strings.Contains(got, "display :100") {
		t.Errorf("id: %s", got)
	}
	// xpraproxy reload: what changed, or the refusal as a disconnect.
	if got := ask("request", "reload"); !strings.Contains(got, "reloaded listeners kept 1") || ctl.reloads != 1 {
		t.Errorf("reload: %s (%d reloads)", got, ctl.reloads)
	}
	ctl.reloadErr = "reload refused: conf:3: unknown option"
	if got := ask("request", "reload"); !strings.Contains(got, "disconnect server error reload refused: conf:3: unknown option") {
		t.Errorf("refused reload: %s", got)
	}
	if got := ask("request", "reload", "proxy-instance", "proxy-5"); !strings.Contains(got, "permission error") {
		t.Errorf("reload of an instance: %s", got)
	}
	if got := ask("request", "upgrade"); !strings.Contains(got, "upgraded new process 2 serves") {
		t.Errorf("upgrade: %s", got)
	}
	// xpra stop: a hello with client-shutdown, then shutdown-server.
	p := newPeer(t, cfg)
	if got := words(p.login(with(xpratest.Hello("foo"), "request", "stop"), "bar")); !strings.Contains(got, "client-shutdown") {
		t.Fatalf("stop: %s", got)
	}
	if got := words(p.send(frame.Packet{"shutdown-server"})); !strings.Contains(got, "proxy server stopped by request") || !ctl.shutdown {
		t.Errorf("shutdown-server: %s (shutdown %v)", got, ctl.shutdown)
	}
}

// A target with as many dials in progress as allowed: the login waits
// (holding no worker) and goes on when one ends; past its deadline it is
// told why.
func TestBusyTargetWaits(t *testing.T) {
	srv := server(t)
	cfg := config(users(t, srv.URL()))
	cfg.Connects = &relay.ConnectLimiter{PerTarget: 1}
	key := "tcp:" + srv.Addr()
	if !cfg.Connects.Acquire(key) {
		t.Fatal("acquire")
	}
	p := newPeer(t, cfg)
	p.login(xpratest.Hello("foo"), "bar")
	time.Sleep(100 * time.Millisecond)
	p.h.Run(t, time.Second)
	if p.s.Relaying() || p.s.Closed() {
		t.Fatal("the login did not wait for the busy target")
	}
	cfg.Connects.Release(key)
	time.Sleep(100 * time.Millisecond)
	p.h.Run(t, 5*time.Second)
	if !p.s.Relaying() {
		t.Fatalf("the login did not go on: %s", words(p.c.Packets(t)))
	}

	cfg.Connects.Acquire(key)
	cfg.LoginTimeout, cfg.ChallengeTimeout = 200*time.Millisecond, 200*time.Millisecond
	q := newPeer(t, cfg)
	q.login(xpratest.Hello("foo"), "bar")
	time.Sleep(400 * time.Millisecond)
	q.h.Run(t, time.Second)
	if got := words(q.c.Packets(t)); !strings.Contains(got, "too many connections in progress") {
		t.Errorf("past the deadline: %s", got)
	}
}

// Probes mark a member that stopped listening dead, and one that came
// back live.
func TestPoolProbe(t *testing.T) {
	a, _ := xpratest.StartServer()
	b, _ := xpratest.StartServer()
	defer a.Close()
	pool, _ := route.ParsePool("farm:first-live:" + a.URL() + "," + b.URL())
	b.Close()
	stop := make(chan struct{})
	go route.Pools{"farm": pool}.ProbeEvery(50*time.Millisecond, stop)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	st := pool.Status()
	if st[a.URL()][0] != 1 || st[b.URL()][0] != 0 {
		t.Errorf("after probing: %v", st)
	}
	cands, err := pool.Pick(9, route.Hints{})
	if err != nil || len(cands) != 1 || cands[0].Display != a.URL() {
		t.Errorf("pick: %v %v", cands, err)
	}
	a.Close()
	pool.Probe(time.Second)
	if _, err := pool.Pick(10, route.Hints{}); err == nil || !strings.Contains(err.Error(), "no live server") {
		t.Errorf("an all-dead pool: %v", err)
	}
}

// Backends reached over ssl://, ws:// and wss:// (the session options
// that verify, or not, the server's certificate).
func TestBackendTransports(t *testing.T) {
	for _, scheme := range []string{"ssl", "ws", "wss", "quic"} {
		t.Run(scheme, func(t *testing.T) {
			srv, err := xpratest.StartServerOver(scheme)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			// A self-signed certificate: verified, it is refused; with
			// ssl-server-verify-mode=none (a row's option) it is not.
			target := srv.URL()
			if scheme != "ws" {
				p := newPeer(t, config(users(t, target)))
				failed := "TLS handshake with the server failed"
				if scheme == "quic" {
					failed = "QUIC connection to the server failed"
				}
				if got := words(p.login(xpratest.Hello("foo"), "bar")); !strings.Contains(got, failed) {
					t.Errorf("unverified certificate: %s", got)
				}
				target += "||ssl-server-verify-mode=none"
			}
			p := relaying(t, config(users(t, target)))
			p.send(frame.Packet{"ping", int64(7), int64(0), "c"})
			if got := words(p.h.Server.Packets(t)); !strings.Contains(got, "ping 7") {
				t.Errorf("relayed over %s: %s", scheme, got)
			}
			// The link's layer lives in this process: an upgrade keeps it.
			if _, err := p.s.State(); !errors.Is(err, relay.ErrNotHandable) {
				t.Errorf("a session to a %s target is handable: %v", scheme, err)
			}
		})
	}
}

// As root, a logged-in client is handed to a worker with its socket and
// a Handoff; the worker adopts it and relays.
func TestHandOffAndAdopt(t *testing.T) {
	srv := server(t)
	path := filepath.Join(t.TempDir(), "users")
	os.WriteFile(path, []byte("foo|bar|65534|65534|"+srv.URL()+"\n"), 0o600)
	m, err := authn.New(authn.Spec{Name: "multifile", Options: map[string]string{"filename": path}}, authn.Env{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config([]authn.Module{m})
	var got *relay.Handoff
	var gotUID int
	cfg.HandOff = func(h *relay.Handoff, acct authn.Account, f *os.File) error {
		got, gotUID = h, acct.UID
		return f.Close()
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	p := newPeer(t, cfg)
	p.c.FD = fds[0]
	p.login(xpratest.Hello("foo"), "bar")
	if got == nil || !p.h.Released || gotUID != 65534 || len(got.Candidates) != 1 || got.User != "foo" {
		t.Fatalf("handoff: %+v released %v uid %d", got, p.h.Released, gotUID)
	}
	// The worker's side.
	h := &xpratest.Host{}
	c := xpratest.NewConn("")
	s, err := relay.AdoptSession(config(nil), h, c, got, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.Run(t, 10*time.Second)
	if !s.Relaying() || !strings.HasPrefix(words(c.Packets(t)), "hello") {
		t.Fatalf("the adopted session does not relay")
	}
	if got := words([]frame.Packet{{s.Info()}}); !strings.Contains(got, "user foo") {
		t.Errorf("adopted session info: %s", got)
	}
	if _, err := relay.AdoptSession(config(nil), h, c, &relay.Handoff{ID: 3, Hello: []byte("junk")}, time.Now()); err == nil {
		t.Error("a handoff with a bad hello was adopted")
	}
}

// A pool whose first member is of the other generation: the client is
// relayed by the second, which then counts the session.
func TestPoolSkipsOtherGeneration(t *testing.T) {
	six, _ := xpratest.StartServer()
	defer six.Close()
	three := server(t)
	pool, _ := route.ParsePool("mixed:first-live:" + six.URL() + "," + three.URL())
	cfg := config(users(t, "pool:mixed"))
	cfg.Pools = route.Pools{"mixed": pool}
	// The proxy learnt that the first member speaks only rencodeplus.
	cfg.Generations.Learn("tcp:"+six.Addr(), relay.EncRencodePlus)
	p := relaying(t, cfg)
	st := pool.Status()
	if st[three.URL()][1] != 1 || st[six.URL()][1] != 0 || st[six.URL()][0] != 1 {
		t.Errorf("after skipping the 6.x member: %v (it stays live)", st)
	}
	p.s.Stop("done")
}

// A disconnect that comes while the client is in the middle of a packet
// (a raw chunk cut through, its rest not arrived yet) waits for that
// packet to end, then the client reads the reason after it; a rest that
// never comes closes the client without one after finishTimeout.
func TestDisconnectMidPacket(t *testing.T) {
	srv := server(t)
	cfg := config(users(t, srv.URL()))
	draw := frame.Packet{"draw", 1, 0, 0, 10, 10, "rgb24", frame.Compressed{Data: bytes.Repeat([]byte{7}, 2<<20)}, 1, 40, frame.NewDict()}
	w := frame.Writer{Encoding: frame.Rencode}
	b, err := w.AppendPacket(nil, draw)
	if err != nil {
		t.Fatal(err)
	}
	half := len(b) / 2 // inside the 2 MiB chunk, which is cut through

	p := relaying(t, cfg)
	p.h.Server.Feed(b[:half])
	p.s.ServerTraffic(p.now)
	p.s.Stop("proxy instance stopped by request")
	if got := words(p.c.Packets(t)); got != "" {
		t.Fatalf("the client was sent %q in the middle of a packet", got)
	}
	if p.s.Closed() || !p.s.Urgent() {
		t.Fatal("the session did not wait for the packet in progress")
	}
	p.h.Server.Feed(b[half:])
	p.s.ServerTraffic(p.now)
	got := p.c.Packets(t)
	if len(got) != 2 || got[0].Type() != "draw" || got[1].Type() != "disconnect" || !strings.Contains(words(got[1:]), "stopped by request") {
		t.Fatalf("after the packet's rest the client got %s, want the draw then the reason", words(got))
	}
	if d, _ := got[0][7].([]byte); len(d) != 2<<20 {
		t.Errorf("the draw's pixels arrived as %T of %d bytes", got[0][7], len(d))
	}
	p.s.Sweep(p.now.Add(time.Minute))
	if !p.s.Closed() {
		t.Error("not closed after the reason")
	}

	// The rest never comes: closed without a reason once the wait is over.
	p = relaying(t, cfg)
	p.h.Server.Feed(b[:half])
	p.s.ServerTraffic(p.now)
	p.s.Shed()
	p.s.Sweep(p.now.Add(time.Second))
	if p.s.Closed() {
		t.Fatal("closed before the wait for the packet's rest was over")
	}
	p.s.Sweep(p.now.Add(10 * time.Second))
	p.s.Sweep(p.now.Add(time.Minute))
	if got := words(p.c.Packets(t)); strings.Contains(got, "disconnect") {
		t.Errorf("a reason was written into the packet in progress: %s", got)
	}
	if !p.s.Closed() {
		t.Error("not closed after the wait")
	}
}
