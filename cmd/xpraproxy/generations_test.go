package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// With bridging off (--bridge=no), a client sent to a server of the
// other generation is told the cause and the fix, first with the server's own words (its plain-text
// refusal), then — the proxy remembers — without dialing; a pool with one
// member of each generation sends each client to the one it can use; a
// 6.x server's log names xpraproxy and its version without the
// "outdated" warning.
func TestMixedGenerations(t *testing.T) {
	a31, a6 := gen31.srv(t, "sessionD"), gen6.srv(t, "sessionD")
	b31, b6 := gen31.srv(t, "sessionB"), gen6.srv(t, "sessionB")
	db := sqliteDB(t,
		[]string{"to6", "pw", "nobody", "nogroup", target(a6)},
		[]string{"to31", "pw", "nobody", "nogroup", target(a31)},
		[]string{"pooled", "pw", "nobody", "nogroup", "pool:mixed"})
	// The 6.x member first: a 3.1.3 client meets it, is refused, and goes on.
	p := startProxy(t, "--bridge=no", "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		"--pool=mixed:first-live:"+target(b6)+","+target(b31))
	url := func(user string) string { return fmt.Sprintf("tcp://%s:pw@127.0.0.1:%d/", user, p.port) }

	cases := []struct {
		name      string
		g         *generation
		user      string
		cause     string // the proxy's reason
		serverSad string // the server's own words, in the first refusal
	}{
		{"3.1 client, 6.x server", gen31, "to6", "needs an xpra >= 4.3 client: rencodeplus; yours offers rencode, bencode", "is not available"},
		{"6.x client, 3.1 server", gen6, "to31", "yours (xpra >= 6) offers only rencodeplus: use an xpra 3.x-5.x client", "the server said: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := c.g.attach(t, url(c.user)).exited(t, 40*time.Second)
			if !strings.Contains(out, c.cause) || !strings.Contains(out, "the server said: ") || !strings.Contains(out, c.serverSad) {
				t.Errorf("first refusal lacks the cause %q or the server's words:\n%s", c.cause, tail([]byte(out), 1500))
			}
			out = c.g.attach(t, url(c.user)).exited(t, 40*time.Second)
			if !strings.Contains(out, c.cause) {
				t.Errorf("second refusal lacks the cause %q:\n%s", c.cause, tail([]byte(out), 1500))
			}
		})
	}
	t.Run("pool", func(t *testing.T) {
		for _, g := range generations() {
			b := b31
			if g.six {
				b = b6
			}
			c := g.attach(t, url("pooled"))
			pixelsMatch(t, b, c, fmt.Sprintf("sessionB on tcp://pooled@127.0.0.1:%d/", p.port))
			c.stop()
		}
	})
	log, _ := os.ReadFile(filepath.Join(env.dir, "server-6.x-sessionB.log"))
	if !strings.Contains(string(log), "via xpraproxy "+relay.Version) || strings.Contains(string(log), "outdated") {
		t.Errorf("the 6.x server's log should name xpraproxy %s and not warn:\n%s", relay.Version, tail(log, 2500))
	}
}

// xpra-html5 v21's login (rencodeplus hello, a client salt of text
// characters 0x00-0xFF, hmac digests) through the proxy to a real 6.x
// server, over ws and wss; a wrong password ends with the disconnect and
// then a WebSocket close frame, so the browser can show why.
func TestHTML5ClientLoginWire(t *testing.T) {
	s := gen6.srv(t, "sessionA")
	cert, key := writeCert(t)
	db := sqliteDB(t, []string{"web", "bar", "nobody", "nogroup", target(s)})
	p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--ssl-cert="+cert, "--ssl-key="+key)
	addr := fmt.Sprintf("127.0.0.1:%d", p.port)
	for _, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			var tc *tls.Config
			if scheme == "wss" {
				tc = &tls.Config{InsecureSkipVerify: true}
			}
			c, err := xpratest.DialBrowser(addr, tc)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			reply, err := c.BrowserLogin("web", "bar")
			if err != nil || reply.Type() != "hello" {
				t.Fatalf("login: %v %v", reply, err)
			}
			caps, _ := reply[1].(frame.Dict)
			if v, _ := caps.Text("version"); !strings.HasPrefix(v, "6.") {
				t.Errorf("the 6.x server's hello did not come through: version %q", v)
			}

			bad, err := xpratest.DialBrowser(addr, tc)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			reply, err = bad.BrowserLogin("web", "wrong")
			if err != nil || reply.Type() != "disconnect" || !strings.Contains(fmt.Sprint(reply...), "authentication failed") {
				t.Fatalf("wrong password: %v %v", reply, err)
			}
			if clean, err := bad.ClosedCleanly(5 * time.Second); !clean {
				t.Errorf("no close frame after the disconnect (the browser would report 1006): %v", err)
			}
		})
	}
}
