package loop

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Control requests (xpra info, xpraproxy list, stop) while every loop is
// stalled past the control timeout return incomplete answers in time,
// and the late tasks, which run once the loops are free, neither panic
// (a send on a closed channel would end the process) nor race (-race).
func TestStalledLoopControl(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")},
		Options{Loops: 2, ControlTimeout: 200 * time.Millisecond})
	tc := dialProxy(t, addr)
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %s", p)
	}
	if got := len(srv.SessionsInfo()); got != 1 {
		t.Fatalf("before the stall: %d sessions listed", got)
	}
	const stall = time.Second
	srv.mu.Lock()
	for _, ls := range srv.loops {
		ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			time.Sleep(stall)
			return nil
		}))
	}
	srv.mu.Unlock()
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.SessionsInfo()
			srv.SessionInfo(1)
			srv.StopSession(1 << 40)
			if _, complete := srv.Records(); complete {
				t.Error("records complete while the loops are stalled")
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took >= stall {
		t.Errorf("control requests waited %s for stalled loops", took)
	}
	time.Sleep(stall) // the late tasks run now
	if got := len(srv.SessionsInfo()); got != 1 {
		t.Errorf("after the stall: %d sessions listed, want 1", got)
	}
	tc.send(frame.Packet{"ping", 1, 0, "x"})
	if p := tc.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("ping after the stall: %s", p)
	}
}

// panicModule panics when asked who a client is.
type panicModule struct{}

func (panicModule) Name() string    { return "panics" }
func (panicModule) Challenge() bool { return false }
func (panicModule) Authenticate(authn.Request) (*authn.Identity, error) {
	panic("the module broke")
}

// A module that panics ends that login with a reason the client shows;
// the proxy and a neighbour's session go on.
func TestPanickingModule(t *testing.T) {
	fs := startFakeServer(t, "")
	good, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}, Options{})
	neighbour := dialProxy(t, good)
	if p := neighbour.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("neighbour login: %s", p)
	}
	bad, srv := startProxy(t, relay.Config{Modules: []authn.Module{panicModule{}}}, Options{})
	for i := range 3 {
		tc := dialProxy(t, bad)
		tc.send(frame.Packet{"hello", hello("foo")})
		p := tc.recv(t)
		if p.Type() != "disconnect" || !strings.Contains(packetText(p), "internal error") {
			t.Fatalf("login %d with a panicking module: %s", i, p)
		}
	}
	waitFor(t, "the refused sessions to close", func() bool { return srv.Sessions() == 0 })
	neighbour.send(frame.Packet{"ping", 2, 0, "x"})
	if p := neighbour.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("neighbour after the panics: %s", p)
	}
}
