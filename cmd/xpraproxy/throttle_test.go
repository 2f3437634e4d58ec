package main

// Issue 25's must-show with real peers: flow control (relay/flow.go,
// loop/park.go) slows a server whose client stopped reading instead of
// buffering what it sends, and cuts nobody before --stall-timeout. A real
// client of each generation (3.1.3 to a 3.1.3 server, 6.x to 6.x) watches
// animated windows through the proxy, is stopped with SIGSTOP for
// throttleStop, then continued: it is still the same attached client
// afterwards (same process, same proxy session, nothing in its log about
// a lost connection), its windows are the server's pixel for pixel, and
// meanwhile the session's queued bytes, sampled every 200 ms from the
// proxy's info (sessions.proxy-N.buffered), stayed under the high-water
// mark plus a packet, the proxy's RSS flat. As root the same, in the
// worker that relays the session (its own info and RSS).
//
// What it measured on two cores (3 noise windows): the server sends 6-13
// MB while its client is stopped; the kernel's socket buffers (the
// client's receive buffer, autotuned to ~3.5 MB, and the proxy's send
// buffer, ~2 MB) take most of it, then the proxy parks the server's
// socket (1 to 5 times) and holds 110-210 KB for the session (at times a
// little over highWater+flushStep: what gnet had read from the parked
// socket counts too); RSS stays within ±0.8 MB.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

const (
	// throttleStop is how long the client is stopped: well under the
	// proxy's stall timeout (60 s, given explicitly below) and the
	// servers' client ping timeouts (60 s in both generations).
	throttleStop = 20 * time.Second
	// throttleAnim is how long the animation runs once started: through
	// the stop, with some seconds either side, then it rests on a fixed
	// last frame whose pixels the client must show exactly.
	throttleAnim = 32 * time.Second
	// throttleWindows is how many noise windows the animation shows (one
	// place each in throttlePlaces): xpra's servers stop sending a
	// window's draws while too many of its acks are late, so one window
	// sends only 3-6 MB while its client is stopped, which the kernel's
	// socket buffers take; three send enough to fill them and reach the
	// proxy's flow control.
	throttleWindows = 3
	// throttleQueueBound is what the session may hold in the proxy while
	// its client reads nothing: highWater (32 KiB) + flushStep (16 KiB)
	// of relay/flow.go, plus one packet held whole. The "packet" is a
	// 1 MiB allowance rather than a measured largest draw: a 480x320
	// window's draw is at most 600 KiB of raw pixels (3.1.3 sends rgb,
	// 6.x webp or h264 of the noise, smaller), and the allowance also
	// covers what gnet had read from the server's socket before parking
	// it, which the session's figure counts too.
	throttleQueueBound = 32<<10 + 16<<10 + 1<<20
	// throttleRSSBoundKB is how much the proxy's RSS may grow over the
	// stop: a few MB (the queued bytes above and the garbage collector's
	// headroom).
	throttleRSSBoundKB = 4 << 10
)

// throttlePlaces are the noise windows' places on the client's display.
var throttlePlaces = [throttleWindows][2]int{{400, 0}, {0, 340}, {500, 340}}

// throttleNoise is the animation, run on the server's display: 480x320 of random pixels, a new
// frame every 33 ms for argv[1] seconds, then a fixed (seeded) last
// frame, in each of argv[2] windows. Noise does not compress, so the
// server's draws are large and keep coming while the stopped client's
// socket buffers fill.
const throttleNoise = `import gi, os, random, sys, time
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk, GLib
import cairo
W, H = 480, 320
SECONDS, N = float(sys.argv[1]), int(sys.argv[2])
t0 = time.time()
def window(i):
    last = bytearray(random.Random(25 + i).randbytes(W * H * 4))
    def draw(widget, cr):
        data = bytearray(os.urandom(W * H * 4)) if time.time() - t0 < SECONDS else last
        s = cairo.ImageSurface.create_for_data(data, cairo.FORMAT_RGB24, W, H, W * 4)
        cr.set_source_surface(s, 0, 0)
        cr.paint()
    def tick():
        da.queue_draw()
        return time.time() - t0 < SECONDS + 0.5
    w = Gtk.Window(title="noise%d" % i)
    w.set_resizable(False)
    da = Gtk.DrawingArea()
    da.set_size_request(W, H)
    w.add(da)
    GLib.timeout_add(33, tick)
    da.connect("draw", draw)
    w.connect("destroy", Gtk.main_quit)
    w.show_all()
for i in range(N):
    window(i)
Gtk.main()
`

func TestThrottledRealClient(t *testing.T) {
	animPath := filepath.Join(env.dir, "throttle-noise.py")
	if err := os.WriteFile(animPath, []byte(throttleNoise), 0o644); err != nil {
		t.Fatal(err)
	}
	forEachGen(t, func(t *testing.T, g *generation) { testThrottledRealClient(t, g, animPath, false, "tcp") })
}

// As root the session relays in a worker (running as the row's account):
// the same flow control there, read from the worker's own info. Over
// ssl:// the record layer stays in the main process and a splice carries
// the plaintext to the worker (loop/splice.go): it is paused in turn
// (loop/spliceflow.go), and what the main process holds is bounded the
// same way.
func TestThrottledRealClientAsRoot(t *testing.T) {
	testenv.NeedRoot(t)
	animPath := filepath.Join(env.dir, "throttle-noise-root.py")
	if err := os.WriteFile(animPath, []byte(throttleNoise), 0o644); err != nil {
		t.Fatal(err)
	}
	forEachGen(t, func(t *testing.T, g *generation) {
		for _, scheme := range []string{"tcp", "ssl"} {
			t.Run(scheme, func(t *testing.T) { testThrottledRealClient(t, g, animPath, true, scheme) })
		}
	})
}

// throttleInfo is the info of the process relaying (`xpraproxy info`
// of the proxy's display, or of a root proxy's worker) as key=value
// lines.
func throttleInfo(p *proxy, of string) (map[string]string, error) {
	if of == "" {
		of = p.display
	}
	out, err := exec.Command(env.bin, "info", of, "--socket-dir="+p.sockDir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("xpraproxy info: %v: %s", err, tail(out, 500))
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

var throttleSessionKey = regexp.MustCompile(`^sessions\.(proxy-\d+)\.buffered$`)

// throttleSession is the name (proxy-N) of the proxy's only session, "" when
// it has none or more than one.
func throttleSession(info map[string]string) string {
	name := ""
	for k := range info {
		if m := throttleSessionKey.FindStringSubmatch(k); m != nil {
			if name != "" {
				return ""
			}
			name = m[1]
		}
	}
	return name
}

func throttleInt(info map[string]string, key string) int64 {
	n, err := strconv.ParseInt(info[key], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

var throttleWorkerKey = regexp.MustCompile(`^workers\.(\d+)\.uid$`)

func testThrottledRealClient(t *testing.T, g *generation, animPath string, root bool, scheme string) {
	s, err := g.startXpra("throttle")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop() })
	db := sqliteDB(t, []string{"slow", "pw", "nobody", "nogroup", target(s)})
	args := []string{"--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename=" + db, "--stall-timeout=60"}
	if scheme == "ssl" {
		cert, key := writeCert(t)
		args = append(args, "--ssl-cert="+cert, "--ssl-key="+key)
	}
	p := startProxyAs(t, root, args...)
	// rgb: large lossless draws from 3.1.3. Not for 6.x: its server
	// sends the noise as webp or h264 whatever the client prefers (then
	// refreshes it losslessly once it rests), and the setting-change it
	// sends about that can kill a 6.5.5 client with --mmap=no (its tray
	// menu's callback: "'XpraClient' object has no attribute
	// 'mmap_read_area'", "error in network packet reading/parsing").
	var enc []string
	if !g.six {
		enc = []string{"--encoding=rgb"}
	}
	if scheme == "ssl" {
		enc = append(enc, "--ssl-server-verify-mode=none")
	}
	c := g.attach(t, fmt.Sprintf("%s://slow:pw@127.0.0.1:%d/", scheme, p.port), enc...)
	title := func(name string) string { return fmt.Sprintf("%s on %s://slow@127.0.0.1:%d/", name, scheme, p.port) }
	pixelsMatch(t, s, c, title(s.name))

	// The animation, an X client of the server's display like the xterm.
	anim := asUserX(s.display, "/usr/bin/python3", animPath, strconv.Itoa(int(throttleAnim/time.Second)), strconv.Itoa(throttleWindows))
	anim.Env = append(anim.Env, "DISPLAY="+s.display)
	animLog, err := os.Create(filepath.Join(env.dir, "throttle-anim-"+g.name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { animLog.Close() })
	anim.Stdout, anim.Stderr = animLog, animLog
	if err := anim.Start(); err != nil {
		t.Fatal(err)
	}
	animEnd := time.Now().Add(throttleAnim)
	env.mu.Lock()
	env.procs = append(env.procs, anim)
	env.mu.Unlock()
	t.Cleanup(func() { anim.Process.Kill(); anim.Wait() })
	t.Cleanup(func() {
		if t.Failed() { // where the windows were, for a pixel mismatch
			out, _ := exec.Command("xwininfo", "-root", "-tree", "-display", c.display).CombinedOutput()
			t.Logf("client's windows:\n%s", out)
			out, _ = asUserX(s.display, "xwininfo", "-root", "-tree", "-display", s.display).CombinedOutput()
			t.Logf("server's windows:\n%s", out)
		}
	})
	// Each noise window as pixelsMatch sees it: the server's window and
	// the client's title.
	type noiseWindow struct {
		srv   xpraServer
		title string
	}
	var noise []noiseWindow
	for i := range throttleWindows {
		w := noiseWindow{srv: *s, title: title(fmt.Sprintf("noise%d", i))}
		w.srv.name = fmt.Sprintf("noise%d", i)
		if g.six {
			w.title = w.srv.name
		}
		noise = append(noise, w)
	}
	var ids []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ids = ids[:0]
		for _, w := range noise {
			if id, _ := windowID(c.display, false, w.title); id != "" {
				ids = append(ids, id)
			}
		}
		if len(ids) == len(noise) {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(animLog.Name())
			t.Fatalf("the client never showed the animated window\nanim log:\n%s", tail(b, 1500))
		}
	}
	// Side by side on the client's display, right of and below the
	// xterm (0-364, 100-260): with no window manager there, a window
	// covered by another would not capture as its own pixels (both
	// servers map the GTK windows at 0,0). The client tells the server.
	for i, id := range ids {
		move := exec.Command("xdotool", "windowmove", id, fmt.Sprint(throttlePlaces[i][0]), fmt.Sprint(throttlePlaces[i][1]))
		move.Env = append(os.Environ(), "DISPLAY="+c.display)
		if out, err := move.CombinedOutput(); err != nil {
			t.Fatalf("xdotool windowmove on the client's display: %v %s", err, out)
		}
	}
	time.Sleep(2 * time.Second) // streaming

	// relaying is the process that relays the session: the proxy, or
	// as root its only worker.
	relaying, pid := "", p.cmd.Process.Pid
	if root {
		info, err := throttleInfo(p, "")
		if err != nil {
			t.Fatal(err)
		}
		for k := range info {
			if m := throttleWorkerKey.FindStringSubmatch(k); m != nil {
				if relaying != "" {
					t.Fatalf("more than one worker:\n%v", info)
				}
				relaying = ":proxy-worker-" + m[1]
				pid, _ = strconv.Atoi(m[1])
			}
		}
		if relaying == "" {
			t.Fatalf("a root proxy with no worker:\n%v", info)
		}
	}
	info, err := throttleInfo(p, relaying)
	if err != nil {
		t.Fatal(err)
	}
	sess := throttleSession(info)
	if sess == "" {
		t.Fatalf("the proxy should have one session:\n%v", info)
	}
	baseRSS := procStatus(pid, "VmRSS")
	baseParked := throttleInt(info, "server.parked")
	s2c := "sessions." + sess + ".server-to-client.bytes"
	baseBytes := throttleInt(info, s2c)
	t.Logf("%s before the stop: %d bytes to the client, %s buffered, RSS %d KB, parked %d", sess, baseBytes, info["sessions."+sess+".buffered"], baseRSS, baseParked)

	// Stop the client; the proxy's figures every 200 ms meanwhile.
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	continued := false
	cont := func() {
		if !continued {
			continued = true
			c.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer cont()
	// A spliced session (root, ssl://): the main process holds the
	// splice's bytes; its buffer total (server.buffered) is bounded the
	// same way, and the splice is never cut.
	spliced := root && scheme == "ssl"
	var baseMainParked, mainPeak, mainOver int64
	if spliced {
		mi, err := throttleInfo(p, "")
		if err != nil {
			t.Fatal(err)
		}
		if n := throttleInt(mi, "server.spliced"); n != 1 {
			t.Fatalf("the main process has %d splices, want 1 (ssl:// as root)", n)
		}
		baseMainParked = throttleInt(mi, "server.parked")
	}
	var peak, peakRSS, samples, over int64
	var stopBytes int64 = -1
	var firstOver string
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for time.Since(stopped) < throttleStop {
		<-tick.C
		info, err := throttleInfo(p, relaying)
		if err != nil {
			t.Fatalf("after %v stopped: %v", time.Since(stopped).Round(time.Millisecond), err)
		}
		if _, ok := info["sessions."+sess+".buffered"]; !ok {
			t.Fatalf("the session ended %v into the stop:\n%s", time.Since(stopped).Round(time.Millisecond), tail([]byte(p.logText()), 2000))
		}
		b := throttleInt(info, "sessions."+sess+".buffered")
		samples++
		peak = max(peak, b)
		if b > throttleQueueBound {
			over++
			if firstOver == "" {
				firstOver = fmt.Sprintf("%d bytes after %v", b, time.Since(stopped).Round(time.Millisecond))
			}
		}
		peakRSS = max(peakRSS, procStatus(pid, "VmRSS"))
		stopBytes = throttleInt(info, s2c)
		if spliced {
			mi, err := throttleInfo(p, "")
			if err != nil {
				t.Fatalf("main process, after %v stopped: %v", time.Since(stopped).Round(time.Millisecond), err)
			}
			if n := throttleInt(mi, "server.spliced"); n != 1 {
				t.Fatalf("the splice ended %v into the stop:\n%s", time.Since(stopped).Round(time.Millisecond), tail([]byte(p.logText()), 2000))
			}
			mb := throttleInt(mi, "server.buffered")
			mainPeak = max(mainPeak, mb)
			if mb > throttleQueueBound {
				mainOver++
			}
		}
		if samples%25 == 0 {
			t.Logf("  %5.1fs: buffered %7d, sent to client %d, parked %s, RSS %d KB", time.Since(stopped).Seconds(), b, stopBytes, info["server.parked"], procStatus(pid, "VmRSS"))
		}
	}
	cont()
	resumed := time.Now()
	info, err = throttleInfo(p, relaying)
	if err != nil {
		t.Fatal(err)
	}
	parked := throttleInt(info, "server.parked") - baseParked
	t.Logf("stopped %v: %d samples, peak buffered %d bytes (bound %d), peak RSS %d KB (+%d KB, bound +%d KB), %d sockets parked, %d bytes sent to the client during the stop",
		resumed.Sub(stopped).Round(time.Millisecond), samples, peak, throttleQueueBound, peakRSS, peakRSS-baseRSS, throttleRSSBoundKB, parked, stopBytes-baseBytes)
	if over > 0 {
		t.Errorf("the session held more than %d bytes in %d of %d samples (first: %s)", throttleQueueBound, over, samples, firstOver)
	}
	if spliced {
		mi, err := throttleInfo(p, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("main process (the splice): peak buffered %d bytes, %d sockets parked", mainPeak, throttleInt(mi, "server.parked")-baseMainParked)
		if mainOver > 0 {
			t.Errorf("the main process held more than %d bytes for the splice in %d of %d samples (peak %d)", throttleQueueBound, mainOver, samples, mainPeak)
		}
	}
	if peakRSS-baseRSS > throttleRSSBoundKB {
		t.Errorf("the proxy's RSS grew by %d KB while the client was stopped (bound %d KB)", peakRSS-baseRSS, throttleRSSBoundKB)
	}
	if parked <= 0 {
		// Not a failure: the kernel's socket buffers (the client's
		// receive buffer grows to a few MB on loopback) took all the
		// server sent, so the proxy never had to slow it.
		t.Logf("note: flow control did not engage (nothing parked)")
	}
	if time.Now().After(animEnd) {
		t.Logf("note: the animation ended before the client was continued")
	}

	// The same client, still attached, catches up: the session (the
	// same one: no reconnection) sends more, and once the animation
	// rests the windows match.
	for deadline := time.Now().Add(10 * time.Second); throttleInt(info, s2c) <= stopBytes && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		info, _ = throttleInfo(p, relaying)
	}
	if n := throttleInt(info, s2c); n <= stopBytes {
		t.Errorf("nothing more reached the continued client (%d bytes, %d when continued)", n, stopBytes)
	}
	if !c.running() {
		t.Fatalf("the client exited once continued:\n%s", tail([]byte(c.text()), 2000))
	}
	time.Sleep(time.Until(animEnd) + time.Second)
	for _, w := range noise {
		pixelsMatch(t, &w.srv, c, w.title)
	}
	pixelsMatch(t, s, c, title(s.name))
	info, err = throttleInfo(p, relaying)
	if err != nil {
		t.Fatal(err)
	}
	if got := throttleSession(info); got != sess {
		t.Errorf("after the stop the proxy's session is %q, want the same %s", got, sess)
	}
	if !c.running() {
		t.Fatalf("the client exited:\n%s", tail([]byte(c.text()), 2000))
	}
	t.Logf("windows matched %v after SIGCONT (the animation ended %v after it); %d bytes to the client in all",
		time.Since(resumed).Round(time.Millisecond), animEnd.Sub(resumed).Round(time.Millisecond), throttleInt(info, s2c))
	out := c.text()
	lost := regexp.MustCompile(`(?i)connection lost|disconnect|reconnect|timeout|timed out`)
	if m := lost.FindAllString(out, -1); m != nil {
		t.Errorf("the client's log mentions %q:\n%s", m, tail([]byte(out), 3000))
	}
	// While it works through what queued for it, a client may find a
	// ping echo late and say "server is not responding" (seen from 6.x
	// on a loaded machine, for 0.2 s): an alert, not a lost connection,
	// but it must have cleared.
	if i := strings.LastIndex(out, "server is not responding"); i >= 0 {
		if !strings.Contains(out[i:], "server is OK again") {
			t.Errorf("the client still says the server is not responding:\n%s", tail([]byte(out), 3000))
		} else {
			t.Logf("note: the client saw the server as not responding for a while, then OK again")
		}
	}
	// One relayed session from start to end, neither cut nor lost.
	log := p.logText()
	if n := strings.Count(log, "msg=relaying"); n != 1 {
		t.Errorf("the proxy relayed %d sessions, want the one", n)
	}
	// The lines of that session (its id's, in the main process and the
	// worker) and any splice's: the access line of the harness's probe
	// of the port (a connection that sent nothing) says "client
	// connection lost" too.
	if m := regexp.MustCompile(`msg=relaying .*?\bsession=(\d+)\b`).FindStringSubmatch(log); m != nil {
		id := regexp.MustCompile(`\bsession=` + m[1] + `\b`)
		var ours []string
		for _, l := range strings.Split(log, "\n") {
			if id.MatchString(l) || strings.Contains(l, "splice") {
				ours = append(ours, l)
			}
		}
		log = strings.Join(ours, "\n")
	}
	if m := regexp.MustCompile(`connection lost|too slow|stopped reading|buffer limit`).FindAllString(log, -1); m != nil {
		t.Errorf("the proxy's log mentions %q:\n%s", m, tail([]byte(log), 2000))
	}
}
