package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// webDriver is a minimal W3C WebDriver client for Debian's chromedriver:
// enough to open a page, find the xpra window's canvas, screenshot it and
// type into it.
type webDriver struct {
	t       *testing.T
	base    string
	session string
}

func (w *webDriver) call(method, path string, body any) json.RawMessage {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, w.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		w.t.Fatalf("webdriver %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out struct {
		Value json.RawMessage `json:"value"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 {
		w.t.Fatalf("webdriver %s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return out.Value
}

func (w *webDriver) sess(method, path string, body any) json.RawMessage {
	return w.call(method, "/session/"+w.session+path, body)
}

// startChromium runs chromedriver and a headless Chromium session.
func startChromium(t *testing.T) *webDriver {
	t.Helper()
	for _, bin := range []string{"/usr/bin/chromium", "/usr/bin/chromedriver"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing: the README's test command installs chromium and chromium-driver", bin)
		}
	}
	port := freePort()
	cmd := exec.Command("/usr/bin/chromedriver", "--port="+strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	w := &webDriver{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	for i := 0; ; i++ {
		if resp, err := http.Get(w.base + "/status"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 50 {
			t.Fatal("chromedriver did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	profile := t.TempDir()
	v := w.call("POST", "/session", map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{"binary": "/usr/bin/chromium", "args": []string{
			"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
			"--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1024",
			"--user-data-dir=" + profile}},
	}}})
	var s struct {
		SessionID string `json:"sessionId"`
	}
	json.Unmarshal(v, &s)
	w.session = s.SessionID
	t.Cleanup(func() { w.call("DELETE", "/session/"+w.session, nil) })
	return w
}

// windowCanvas finds the largest canvas on the page (the xpra window's).
func (w *webDriver) windowCanvas() (string, bool) {
	v := w.sess("POST", "/execute/sync", map[string]any{"args": []any{}, "script": `
		let best = null, area = 0;
		for (const c of document.querySelectorAll("canvas")) {
			const a = c.width * c.height;
			if (a > area && c.offsetParent !== null) { best = c; area = a; }
		}
		return best;`})
	var el map[string]string
	if json.Unmarshal(v, &el) != nil {
		return "", false
	}
	for _, id := range el {
		return id, true
	}
	return "", false
}

func (w *webDriver) elementPNG(id, path string) error {
	v := w.sess("GET", "/element/"+id+"/screenshot", nil)
	var b64 string
	json.Unmarshal(v, &b64)
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// typeText sends key presses to the focused element.
func (w *webDriver) typeText(s string) {
	var acts []map[string]any
	for _, r := range s {
		k := string(r)
		if r == '\n' {
			k = "\uE007" // Enter
		}
		acts = append(acts, map[string]any{"type": "keyDown", "value": k}, map[string]any{"type": "keyUp", "value": k})
	}
	w.sess("POST", "/actions", map[string]any{"actions": []any{map[string]any{"type": "key", "id": "keyboard", "actions": acts}}})
}

// similar compares two screenshots over their common area: the share of
// pixels whose channels differ by more than 16 (lossy encodings, scaling
// by one pixel at the edges).
func similar(a, b string) (float64, error) {
	load := func(p string) (image.Image, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return png.Decode(f)
	}
	ia, err := load(a)
	if err != nil {
		return 1, err
	}
	ib, err := load(b)
	if err != nil {
		return 1, err
	}
	w := min(ia.Bounds().Dx(), ib.Bounds().Dx())
	h := min(ia.Bounds().Dy(), ib.Bounds().Dy())
	if w < 100 || h < 50 {
		return 1, fmt.Errorf("images too small: %v %v", ia.Bounds(), ib.Bounds())
	}
	diff := 0
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			r1, g1, b1, _ := ia.At(ia.Bounds().Min.X+x, ia.Bounds().Min.Y+y).RGBA()
			r2, g2, b2, _ := ib.At(ib.Bounds().Min.X+x, ib.Bounds().Min.Y+y).RGBA()
			d := func(p, q uint32) bool { return max(p, q)-min(p, q) > 16<<8 }
			if d(r1, r2) || d(g1, g2) || d(b1, b2) {
				diff++
			}
		}
	}
	return float64(diff) / float64(w*h), nil
}

// The HTML5 client, served by xpraproxy from /usr/share/xpra/www, runs in
// headless Chromium, connects through the proxy (WebSocket on the same
// port) to a real xpra server, shows the xterm, and what the test types
// into it runs on the server.
func TestHTML5ClientInChromium(t *testing.T) {
	html5Session(t, srv(t, "sessionB"))
}

// Debian's 3.1 HTML5 client speaks only bencode; through the proxy it
// uses a 6.x server, bridged (docs/bridge.md): the xterm shows in the
// canvas and a command typed in Chromium runs on the server.
func TestHTML5ClientBridged(t *testing.T) {
	b := gen6.srv(t, "sessionB")
	p := html5Session(t, b)
	if log := p.logText(); !strings.Contains(log, "bridging xpra generations") {
		t.Errorf("the session was not bridged:\n%s", tail([]byte(log), 2000))
	}
}

// html5Session runs the HTML5 client in Chromium through a proxy to b
// (a sqlite row foo:bar), checks the canvas against b's window and types
// a command into it; it returns the proxy.
func html5Session(t *testing.T, b *xpraServer) *proxy {
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(b)})
	p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--html=on")
	w := startChromium(t)
	w.sess("POST", "/url", map[string]any{"url": fmt.Sprintf(
		"http://127.0.0.1:%d/index.html?username=foo&password=bar&insecure=1&sound=false&encoding=png&clipboard=false&printing=false&file_transfer=false",
		p.port)})

	var canvas string
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		if id, ok := w.windowCanvas(); ok {
			canvas = id
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if canvas == "" {
		shot := w.sess("GET", "/screenshot", nil)
		t.Fatalf("no xpra window canvas in the page (page screenshot %d bytes of base64); proxy log:\n%s", len(shot), tail([]byte(p.logText()), 2000))
	}
	// The canvas shows the server's xterm, within a tolerance: the HTML5
	// client may draw with a lossy encoding.
	sid, err := windowID(b.display, true, b.name)
	if err != nil || sid == "" {
		t.Fatalf("server window: %v", err)
	}
	var frac float64 = 1
	for i := 0; i < 20; i++ {
		if i > 0 {
			// Looked up again: on a loaded machine the xterm may not be
			// mapped yet at the first look, which then finds a small
			// namesake (a CI run compared two 10x17 images for 10 s).
			if id, err := windowID(b.display, true, b.name); err == nil && id != "" {
				sid = id
			}
		}
		sp := filepath.Join(env.dir, fmt.Sprintf("html5-%s-server-%d.png", b.gen.name, i))
		cp := filepath.Join(env.dir, fmt.Sprintf("html5-%s-canvas-%d.png", b.gen.name, i))
		if snapshot(b.display, true, sid, sp) == nil && w.elementPNG(canvas, cp) == nil {
			if frac, err = similar(sp, cp); err == nil && frac < 0.02 {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if frac >= 0.02 {
		t.Fatalf("canvas differs from the server's window in %.1f %% of its pixels (%v)", 100*frac, err)
	}

	// Type a command into the xterm through the browser; it runs on the
	// server (as the session's user) and its output is on the display.
	marker := filepath.Join(env.dir, fmt.Sprintf("typed-%d", time.Now().UnixNano()))
	w.sess("POST", "/element/"+canvas+"/click", map[string]any{})
	before := filepath.Join(env.dir, "html5-"+b.gen.name+"-before.png")
	snapshot(b.display, true, sid, before)
	w.typeText("echo through-the-proxy > " + marker + "\n")
	deadline = time.Now().Add(20 * time.Second)
	for {
		if data, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(data)) == "through-the-proxy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command typed in Chromium did not run on the server")
		}
		time.Sleep(300 * time.Millisecond)
	}
	after := filepath.Join(env.dir, "html5-"+b.gen.name+"-after.png")
	snapshot(b.display, true, sid, after)
	if frac, _ := similar(before, after); frac == 0 {
		t.Error("the server's xterm did not change after typing")
	}
	return p
}
