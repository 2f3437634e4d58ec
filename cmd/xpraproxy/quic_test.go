package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

// The real 6.x client over quic:// (WebSocket over HTTP/3, aioquic from
// interop/xpra6.sh) through the proxy to a real 6.x server over tcp, pixel
// for pixel; a client that verifies certificates refuses the proxy's
// self-signed one and attaches once given it as its CA; a wrong password
// is refused with the reason. xpra 3.1.3 has no QUIC: 6.x only. As root
// the QUIC connection stays in the main process and the stream is spliced
// to the worker.
func TestQUICRealClient(t *testing.T) { testQUICRealClient(t, false) }

func TestQUICRealClientAsRoot(t *testing.T) {
	testenv.NeedRoot(t)
	testQUICRealClient(t, true)
}

func testQUICRealClient(t *testing.T, root bool) {
	g := gen6
	a := g.srv(t, "sessionA")
	cert, key := writeCert(t)
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)})
	// The same port number serves tcp and, over UDP, quic.
	p := startProxyAs(t, root, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		"--bind-quic=127.0.0.1:PORT,auth=sqlite:filename="+db, "--ssl-cert="+cert, "--ssl-key="+key)
	url := func(pw string) string { return fmt.Sprintf("quic://foo:%s@127.0.0.1:%d/", pw, p.port) }

	t.Run("self-signed refused", func(t *testing.T) {
		out := g.attach(t, url("bar")).exited(t, 60*time.Second)
		if !strings.Contains(out, "self-signed certificate") {
			t.Errorf("a verifying client should refuse the self-signed certificate:\n%s", tail([]byte(out), 2000))
		}
	})
	t.Run("with the CA", func(t *testing.T) {
		c := g.attach(t, url("bar"), "--ssl-ca-certs="+cert)
		pixelsMatch(t, a, c, "sessionA")
		if !c.running() {
			t.Fatalf("client exited:\n%s", tail([]byte(c.text()), 2000))
		}
		c.stop()
	})
	t.Run("wrong password", func(t *testing.T) {
		out := g.attach(t, url("wrong"), "--ssl-ca-certs="+cert).exited(t, 60*time.Second)
		if !strings.Contains(out, "authentication failed") {
			t.Errorf("no reason for a wrong password:\n%s", tail([]byte(out), 2000))
		}
	})
	// A session's access line comes when its close is over (the grace
	// for the client to read the reason): wait for it.
	log := p.logText()
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(log, "transport=quic") && time.Now().Before(deadline); log = p.logText() {
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Contains(log, "=bar") || strings.Contains(log, "wrong") {
		t.Errorf("a password reached the log")
	}
	if !strings.Contains(log, "transport=quic") {
		t.Errorf("no quic session in the access log:\n%s", tail([]byte(log), 3000))
	}
	if root && !strings.Contains(log, "connection handed to worker") {
		t.Errorf("no handoff in a root proxy's log:\n%s", tail([]byte(log), 2000))
	}
}

// The proxy reaches a real 6.x server started with --bind-quic over
// quic:// from a tcp client of its generation, pixel for pixel: the
// server's self-signed certificate is refused unless the row gives its
// CA (ssl-ca-certs) or turns verification off.
func TestQUICTarget(t *testing.T) { testQUICTarget(t, false) }

// As root the worker of the row's account dials the quic:// target.
func TestQUICTargetAsRoot(t *testing.T) {
	testenv.NeedRoot(t)
	testQUICTarget(t, true)
}

func testQUICTarget(t *testing.T, root bool) {
	g := gen6
	cert, key := writeCert(t)
	qport := freePort()
	name := "sessionQ"
	if root {
		name = "sessionR"
	}
	s, err := g.startXpra(name, fmt.Sprintf("--bind-quic=127.0.0.1:%d", qport), "--ssl-cert="+cert, "--ssl-key="+key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop() })
	quicURL := fmt.Sprintf("quic://127.0.0.1:%d/", qport)
	db := sqliteDB(t,
		[]string{"unverified", "pw", "nobody", "nogroup", quicURL},
		[]string{"withca", "pw", "nobody", "nogroup", quicURL, "", "ssl-ca-certs=" + cert},
		[]string{"noverify", "pw", "nobody", "nogroup", quicURL, "", "ssl-server-verify-mode=none"})
	p := startProxyAs(t, root, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db)
	url := func(user string) string { return fmt.Sprintf("tcp://%s:pw@127.0.0.1:%d/", user, p.port) }
	t.Run("certificate refused", func(t *testing.T) {
		out := g.attach(t, url("unverified")).exited(t, 60*time.Second)
		if !strings.Contains(out, "QUIC connection to the server failed") {
			t.Errorf("no reason for the refused certificate:\n%s", tail([]byte(out), 2000))
		}
	})
	for _, user := range []string{"withca", "noverify"} {
		t.Run(user, func(t *testing.T) {
			c := g.attach(t, url(user))
			pixelsMatch(t, s, c, name)
			if !c.running() {
				t.Fatalf("client exited:\n%s", tail([]byte(c.text()), 2000))
			}
			c.stop()
		})
	}
	if !strings.Contains(p.logText(), "target="+quicURL) {
		t.Errorf("the proxy did not relay to the quic target:\n%s", tail([]byte(p.logText()), 2000))
	}
}

// Headless Chromium's own WebTransport (a page of this project's,
// testdata/wt/wt.html, that opens the session as xpra-html5's
// js/WebTransport.js does and speaks bencode with a flat hello) through
// the proxy to a real 6.x server, bridged: the proxy's challenge is
// answered, the server's hello and its window's metadata arrive, and key
// events the page sends reach the server's xterm.
// Chromium trusts the test certificate by its hash
// (serverCertificateHashes).
func TestWebTransportChromium(t *testing.T) {
	b := gen6.srv(t, "sessionB")
	cert, key := writeCert(t)
	pemBytes, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	sum := sha256.Sum256(block.Bytes)
	www := sharedDir(t, "wt-www")
	page, err := os.ReadFile("testdata/wt/wt.html")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(www, "wt.html"), page, 0o644)
	os.WriteFile(filepath.Join(www, "index.html"), []byte("<a href=wt.html>wt</a>\n"), 0o644) // --html wants one
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(b)})
	p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		"--bind-quic=127.0.0.1:PORT,auth=sqlite:filename="+db, "--ssl-cert="+cert, "--ssl-key="+key, "--html="+www)
	w := startChromium(t)
	w.sess("POST", "/url", map[string]any{"url": fmt.Sprintf("http://127.0.0.1:%d/wt.html?port=%d&user=foo&password=bar&keys=qwzx&hash=%s",
		p.port, p.port, url.QueryEscape(base64.StdEncoding.EncodeToString(sum[:])))})
	var state struct {
		Log       []string `json:"log"`
		Packets   []string `json:"packets"`
		Done      bool     `json:"done"`
		Challenge *struct {
			Digest string `json:"digest"`
		} `json:"challenge"`
		Answer string `json:"answer"`
		Reason string `json:"reason"`
		Window *struct {
			Title string `json:"title"`
		} `json:"window"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		v := w.sess("POST", "/execute/sync", map[string]any{"script": "return JSON.stringify(window.wt || {})", "args": []any{}})
		var s string
		json.Unmarshal(v, &s)
		json.Unmarshal([]byte(s), &state)
		if state.Done || state.Window != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if state.Challenge == nil || state.Answer != "hello" || state.Window == nil || state.Window.Title != b.name {
		t.Fatalf("the page over WebTransport: %+v (challenge %v, window %v)\nproxy log:\n%s", state, state.Challenge, state.Window, tail([]byte(p.logText()), 2500))
	}
	if log := p.logText(); !strings.Contains(log, "bridging xpra generations") {
		t.Errorf("the session was not bridged:\n%s", tail([]byte(log), 2000))
	}
	// Key events typed by the page reach the server: the xterm shows
	// them (its window changes; nothing else types there).
	var sid string
	before := filepath.Join(env.dir, "wt-before.png")
	for i := 0; ; i++ {
		// Looked up each time: the first look may find a namesake that
		// cannot be captured (as in html5Session).
		sid, err = windowID(b.display, true, b.name)
		if err == nil && sid != "" {
			if err = snapshot(b.display, true, sid, before); err == nil {
				break
			}
		}
		if i == 20 {
			t.Fatalf("server window: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	w.sess("POST", "/execute/sync", map[string]any{"script": "window.wt.go = true; return 1", "args": []any{}})
	var frac float64
	for i := 0; i < 20 && frac == 0; i++ {
		time.Sleep(500 * time.Millisecond)
		after := filepath.Join(env.dir, fmt.Sprintf("wt-after-%d.png", i))
		if snapshot(b.display, true, sid, after) == nil {
			frac, _ = similar(before, after)
		}
	}
	if frac == 0 {
		v := w.sess("POST", "/execute/sync", map[string]any{"script": "return JSON.stringify(window.wt)", "args": []any{}})
		t.Errorf("the keys typed over WebTransport did not change the server's xterm; page: %s", v)
	}
}
