package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

// writeCert makes a self-signed certificate and key for 127.0.0.1 in the
// test directory, readable by the proxy's user.
func writeCert(t *testing.T) (string, string) {
	t.Helper()
	dir, err := os.MkdirTemp(env.dir, "cert-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := selfsigned.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(key, 0o644) // the proxy may run as the test user
	return cert, key
}

// The real GTK client of each generation attaches through one port with tcp://,
// ws://, ssl:// and wss://, and sees the server's window pixel for pixel;
// as root too, where ssl:// and wss:// reach the worker through a splice
// (the record layer stays in the main process, on its loop).
func TestOnePortRealClient(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) { testOnePortRealClient(t, g, false) })
}

func TestOnePortRealClientAsRoot(t *testing.T) {
	testenv.NeedRoot(t)
	forEachGen(t, func(t *testing.T, g *generation) { testOnePortRealClient(t, g, true) })
}

func testOnePortRealClient(t *testing.T, g *generation, root bool) {
	a := g.srv(t, "sessionA")
	cert, key := writeCert(t)
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)},
		// The proxy reaches the real server over WebSocket too (xpra's tcp
		// sockets accept the upgrade).
		[]string{"wsuser", "pw", "nobody", "nogroup", fmt.Sprintf("ws://127.0.0.1:%d/", a.port)})
	p := startProxyAs(t, root, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--ssl-cert="+cert, "--ssl-key="+key)
	for _, scheme := range []string{"tcp", "ws", "ssl", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			url := fmt.Sprintf("%s://foo:bar@127.0.0.1:%d/", scheme, p.port)
			c := g.attach(t, url, "--ssl-server-verify-mode=none")
			pixelsMatch(t, a, c, fmt.Sprintf("sessionA on %s://foo@127.0.0.1:%d/", scheme, p.port))
			if !c.running() {
				t.Fatalf("client exited:\n%s", tail([]byte(c.text()), 2000))
			}
			c.stop()
		})
	}
	t.Run("ws target", func(t *testing.T) {
		c := g.attach(t, fmt.Sprintf("wss://wsuser:pw@127.0.0.1:%d/", p.port), "--ssl-server-verify-mode=none")
		pixelsMatch(t, a, c, fmt.Sprintf("sessionA on wss://wsuser@127.0.0.1:%d/", p.port))
		if !strings.Contains(p.logText(), "target=ws://127.0.0.1:") {
			t.Errorf("the proxy did not relay to the ws target:\n%s", tail([]byte(p.logText()), 1500))
		}
		c.stop()
	})
	if log := p.logText(); strings.Contains(log, "=bar") {
		t.Errorf("a password reached the log")
	}
	if root {
		// Every TLS session went through a worker: the main process
		// relayed nothing itself.
		if !strings.Contains(p.logText(), "connection handed to worker") {
			t.Errorf("no handoff in a root proxy's log:\n%s", tail([]byte(p.logText()), 2000))
		}
	}
}
