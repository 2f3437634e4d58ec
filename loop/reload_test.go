package loop

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/relay"
)

// TestReload swaps a listener's users, adds a listener and removes one
// while a session relays: the session goes on, the next login meets the
// new users, the new port serves and the removed one refuses.
func TestReload(t *testing.T) {
	fs := startFakeServer(t, "")
	target := "tcp://" + fs.Addr() + "/"
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||"+target)}
	addr, srv := startProxy(t, cfg, Options{})
	cfg = *srv.Listeners()[0].Config // with startProxy's defaults
	gone := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort())
	// A second listener, to be removed.
	if _, err := srv.Reload([]Listener{srv.Listeners()[0], {Network: "tcp", Address: gone, Config: &cfg}}); err != nil {
		t.Fatal(err)
	}
	dialProxy(t, gone).login(t, "foo", "bar")

	before := dialProxy(t, addr)
	if p := before.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login before the reload: %s", p)
	}

	next := cfg
	next.Modules = multifile(t, "moo|cow|||"+target)
	added := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort())
	res, err := srv.Reload([]Listener{
		{Network: "tcp", Address: addr, Config: &next},
		{Network: "tcp", Address: added, Config: &next},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Kept, []string{"tcp://" + addr}) || !slices.Equal(res.Added, []string{"tcp://" + added}) ||
		!slices.Equal(res.Removed, []string{"tcp://" + gone}) {
		t.Fatalf("reload result %+v", res)
	}

	// The session from before relays on.
	before.send(frame.Packet{"ping", 1, 0, "x"})
	if p := before.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("relayed session after the reload: %s", p)
	}
	// New logins meet the new users, on the kept and the added port.
	for _, a := range []string{addr, added} {
		if p := dialProxy(t, a).login(t, "moo", "cow"); p.Type() != "hello" {
			t.Fatalf("%s: new user after the reload: %s", a, p)
		}
		expectDisconnect(t, dialProxy(t, a).login(t, "foo", "bar"), "authentication failed")
	}
	// The removed port accepts nothing.
	if c, err := net.DialTimeout("tcp", gone, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts after its removal", gone)
	}

	// A port that cannot be bound refuses the whole reload.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := srv.Reload([]Listener{{Network: "tcp", Address: addr, Config: &cfg}, {Network: "tcp", Address: busy.Addr().String(), Config: &cfg}}); err == nil {
		t.Fatal("a reload onto a busy port succeeded")
	}
	if p := dialProxy(t, addr).login(t, "moo", "cow"); p.Type() != "hello" {
		t.Fatalf("after a refused reload the old settings must serve: %s", p)
	}
	if got := len(srv.Listeners()); got != 2 {
		t.Fatalf("listeners after a refused reload: %d", got)
	}
}
