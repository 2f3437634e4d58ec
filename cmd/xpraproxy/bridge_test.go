package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A real client of each generation through the proxy to a real server of
// the other (docs/bridge.md): the window pixel-exact, and a command typed
// into the client's window runs on the server.
func TestBridgedGenerations(t *testing.T) {
	s31, s6 := gen31.srv(t, "sessionB"), gen6.srv(t, "sessionB")
	db := sqliteDB(t,
		[]string{"to6", "pw", "nobody", "nogroup", target(s6)},
		[]string{"to31", "pw", "nobody", "nogroup", target(s31)})
	p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db)
	for _, c := range []struct {
		name   string
		client *generation
		user   string
		server *xpraServer
	}{
		{"3.1 client, 6.x server", gen31, "to6", s6},
		{"6.x client, 3.1 server", gen6, "to31", s31},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := c.client.attach(t, fmt.Sprintf("tcp://%s:pw@127.0.0.1:%d/", c.user, p.port))
			pixelsMatch(t, c.server, cl, fmt.Sprintf("%s on tcp://%s@127.0.0.1:%d/", c.server.name, c.user, p.port))
			typeInClient(t, cl, c.server)
			pixelsMatch(t, c.server, cl, fmt.Sprintf("%s on tcp://%s@127.0.0.1:%d/", c.server.name, c.user, p.port))
			cl.stop()
		})
	}
	if log := p.logText(); !strings.Contains(log, "bridging xpra generations") {
		t.Errorf("the proxy's log does not say it bridged:\n%s", tail([]byte(log), 2000))
	}
}

// typeInClient types a command into the client's window for server s
// (xdotool on the client's display: the keys travel through the client,
// the proxy and the server to the xterm) and waits for what it creates.
func typeInClient(t *testing.T, c *client, s *xpraServer) {
	t.Helper()
	marker := filepath.Join(os.TempDir(), fmt.Sprintf("xpraproxy-bridge-typed-%d", rand.IntN(1e9)))
	t.Cleanup(func() { os.Remove(marker) })
	title := s.name
	cmd := exec.Command("xdotool", "search", "--name", title, "windowfocus", "--sync", "type", "--delay", "30", "touch "+marker+"\n")
	cmd.Env = append(os.Environ(), "DISPLAY="+c.display)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xdotool on the client's display: %v %s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(marker); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the command typed into the client never ran on the %s server (%s missing)", s.gen.name, marker)
}
