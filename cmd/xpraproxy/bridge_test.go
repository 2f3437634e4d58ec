package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

// A real client of each generation through the proxy to a real server of
// the other (docs/bridge.md): the window pixel-exact, and a command typed
// into the client's window runs on the server.
func TestBridgedGenerations(t *testing.T) {
	// sessionD: the 6.x server warns that a bridged 3.1.3 client is
	// "outdated" (it is), and TestMixedGenerations reads sessionB's log.
	s31, s6 := gen31.srv(t, "sessionD"), gen6.srv(t, "sessionD")
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
			clipboardBothWays(t, cl, c.server)
			resizeFromClient(t, cl, c.server)
			pixelsMatch(t, c.server, cl, fmt.Sprintf("%s on tcp://%s@127.0.0.1:%d/", c.server.name, c.user, p.port))
			cl.stop()
		})
	}
	// info-request through a bridged session: the real server's answer
	// (tens of KB of nested info) comes back decoded in the client's
	// generation.
	for _, c := range []struct {
		name string
		dial func(addr, source string) (*xpratest.Client, error)
		user string
		six  bool
	}{{"info, 3.1 client", xpratest.Dial, "to6", false}, {"info, 6.x client", xpratest.Dial6, "to31", true}} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := c.dial(fmt.Sprintf("127.0.0.1:%d", p.port), "")
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			hello := xpratest.Hello(c.user)
			if c.six {
				hello = xpratest.Hello6(c.user)
			}
			if got, err := cl.Login(c.user, "pw", hello); err != nil || got.Type() != "hello" {
				t.Fatalf("login: %v %v", got, err)
			}
			cl.Send(frame.Packet{"info-request", []any{}, []any{}, []any{}})
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
				pkt, err := cl.Recv(10 * time.Second)
				if err != nil {
					t.Fatalf("waiting for the info-response: %v", err)
				}
				if pkt.Type() != "info-response" {
					continue
				}
				info, _ := pkt[1].(frame.Dict)
				if len(info) < 5 {
					t.Fatalf("info-response: %v", pkt)
				}
				return
			}
			t.Fatal("no info-response")
		})
	}
	// Video across generations: a 640x480 animation of noise (four
	// frames) on the server, the client of the other generation asking
	// for h264: the server sends h264 draws through the bridge (the
	// proxy's info counts the draws by encoding) and the client decodes
	// them without an error.
	var frames []string
	for i := range 4 {
		f := filepath.Join(env.dir, fmt.Sprintf("noise-%d.png", i))
		if out, err := exec.Command("convert", "-size", "640x480", "xc:", "+noise", "Random", f).CombinedOutput(); err != nil {
			t.Fatalf("convert: %v %s", err, out)
		}
		os.Chmod(f, 0o644)
		frames = append(frames, f)
	}
	for _, c := range []struct {
		client *generation
		user   string
		server *xpraServer
		coding string
	}{
		{gen31, "to6", s6, "h264"}, {gen6, "to31", s31, "h264"},
		{gen31, "to6", s6, "vp8"}, {gen6, "to31", s31, "vp8"},
	} {
		t.Run(fmt.Sprintf("video, %s from a %s server to a %s client", c.coding, c.server.gen.name, c.client.name), func(t *testing.T) {
			before := bridgedDraws(p, c.coding)
			where := fmt.Sprintf("%s on tcp://%s@127.0.0.1:%d/", c.server.name, c.user, p.port)
			cl := c.client.attach(t, fmt.Sprintf("tcp://%s:pw@127.0.0.1:%d/", c.user, p.port), "--encoding="+c.coding)
			pixelsMatch(t, c.server, cl, where)
			// The server picks a video encoding only once it sees a steady
			// animation; on a loaded machine (CI: two cores, the other
			// tests) that can take longer than one run of it.
			draws := before
			for round := 0; round < 3 && draws <= before; round++ {
				anim := asUserX(c.server.display, "timeout", append([]string{"8", "animate", "-delay", "4"}, frames...)...)
				anim.Env = append(anim.Env, "DISPLAY="+c.server.display)
				anim.Run() // ends by the timeout
				draws = bridgedDraws(p, c.coding)
			}
			if draws <= before {
				info, _ := gen31.command(false, "info", p.display, "--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir).CombinedOutput()
				t.Fatalf("no %s draws through the bridge in the proxy's info:\n%s", c.coding, tail(info, 3000))
			}
			for _, line := range strings.Split(cl.text(), "\n") {
				l := strings.ToLower(line)
				bad := strings.Contains(l, "error") || strings.Contains(l, "fail")
				video := strings.Contains(l, c.coding) || strings.Contains(l, "decod") || strings.Contains(l, "paint") || strings.Contains(l, "video")
				if bad && video {
					t.Errorf("the %s client could not decode the %s server's %s: %s", c.client.name, c.server.gen.name, c.coding, line)
				}
			}
			t.Logf("%d %s draws from the %s server decoded by the %s client", draws-before, c.coding, c.server.gen.name, c.client.name)
			pixelsMatch(t, c.server, cl, where)
			cl.stop()
		})
	}
	// A root proxy hands the logged-in client to a worker running as the
	// row's account (nobody), which dials and bridges.
	t.Run("through a root proxy's worker", func(t *testing.T) {
		testenv.NeedRoot(t)
		root := startProxyAs(t, true, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db)
		cl := gen31.attach(t, fmt.Sprintf("tcp://to6:pw@127.0.0.1:%d/", root.port))
		pixelsMatch(t, s6, cl, fmt.Sprintf("%s on tcp://to6@127.0.0.1:%d/", s6.name, root.port))
		if log := root.logText(); !strings.Contains(log, "bridging xpra generations") {
			t.Errorf("the root proxy's worker did not say it bridged:\n%s", tail([]byte(log), 2000))
		}
		cl.stop()
	})
	if log := p.logText(); !strings.Contains(log, "bridging xpra generations") {
		t.Errorf("the proxy's log does not say it bridged:\n%s", tail([]byte(log), 2000))
	}
}

// bridgedDraws sums the draws of encoding coding over the bridged
// sessions in the proxy's info (ended sessions are gone from it: 0).
func bridgedDraws(p *proxy, coding string) int {
	info, _ := gen31.command(false, "info", p.display, "--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir).CombinedOutput()
	n := 0
	for _, m := range regexp.MustCompile(`(?m)^sessions\.proxy-\d+\.bridge\.draws\.`+regexp.QuoteMeta(coding)+`=(\d+)$`).FindAllStringSubmatch(string(info), -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
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

// clipboardBothWays copies text on the client's display and reads it on
// the server's, then the other way (clipboard-token, -request and
// -contents through the bridge).
func clipboardBothWays(t *testing.T, c *client, s *xpraServer) {
	t.Helper()
	toServer := fmt.Sprintf("from-the-%s-client-%d", c.gen.name, rand.IntN(1e9))
	set := exec.Command("sh", "-c", "printf %s \""+toServer+"\" | xclip -selection clipboard -i >/dev/null 2>&1")
	set.Env = append(os.Environ(), "DISPLAY="+c.display)
	set.WaitDelay = 2 * time.Second // xclip stays behind to serve the selection
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("xclip on the client's display: %v %s", err, out)
	}
	read := func() *exec.Cmd {
		r := asUserX(s.display, "xclip", "-o", "-selection", "clipboard")
		r.Env = append(r.Env, "DISPLAY="+s.display)
		return r
	}
	waitFor(t, "the client's clipboard on the "+s.gen.name+" server", toServer, read)

	toClient := fmt.Sprintf("from-the-%s-server-%d", s.gen.name, rand.IntN(1e9))
	set = asUserX(s.display, "sh", "-c", "printf %s \""+toClient+"\" | xclip -selection clipboard -i >/dev/null 2>&1")
	set.Env = append(set.Env, "DISPLAY="+s.display)
	set.WaitDelay = 2 * time.Second
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("xclip on the server's display: %v %s", err, out)
	}
	waitFor(t, "the server's clipboard on the "+c.gen.name+" client", toClient, func() *exec.Cmd {
		r := exec.Command("xclip", "-o", "-selection", "clipboard")
		r.Env = append(os.Environ(), "DISPLAY="+c.display)
		return r
	})
}

// waitFor runs cmd until its output is want.
func waitFor(t *testing.T, what, want string, cmd func() *exec.Cmd) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		c := cmd()
		c.WaitDelay = 2 * time.Second
		out, _ := c.CombinedOutput()
		if last = strings.TrimSpace(string(out)); last == want {
			return
		}
	}
	t.Fatalf("%s: got %q, want %q", what, last, want)
}

// resizeFromClient resizes the client's window and waits for the
// server's window to follow (configure-window through the bridge).
func resizeFromClient(t *testing.T, c *client, s *xpraServer) {
	t.Helper()
	width := func() int {
		id, err := windowID(s.display, true, s.name)
		if err != nil || id == "" {
			return 0
		}
		out, _ := asUserX(s.display, "xwininfo", "-display", s.display, "-id", id).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if w, ok := strings.CutPrefix(strings.TrimSpace(line), "Width: "); ok {
				var n int
				fmt.Sscan(w, &n)
				return n
			}
		}
		return 0
	}
	before := width()
	resize := exec.Command("xdotool", "search", "--name", s.name, "windowsize", "%@", fmt.Sprint(before+120), "300")
	resize.Env = append(os.Environ(), "DISPLAY="+c.display)
	if out, err := resize.CombinedOutput(); err != nil {
		t.Fatalf("xdotool windowsize on the client's display: %v %s", err, out)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if w := width(); w > before+60 {
			return
		}
	}
	t.Fatalf("the %s server's window stayed %d wide after the client's was resized to %d", s.gen.name, width(), before+120)
}
