package main

// The interop harness: real xpra servers and clients of both generations
// — Debian's 3.1.3 and 6.x built from PyPI by interop/xpra6.sh — under
// Xvfb, each generation's servers started once for the package (TestMain),
// with xpraproxy built from this tree between them. As root (CI), the servers run as an unprivileged
// user (xpratest, created if missing); the proxy runs as that user too,
// except in the privilege-separation tests, where it runs as root and
// relays in workers.

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

const testUser = "xpratest"

var quiet = []string{"--mdns=no", "--pulseaudio=no", "--notifications=no", "--speaker=no", "--microphone=no",
	"--webcam=no", "--printing=no", "--dbus-proxy=no"}

// env is the package's shared state, set up by TestMain.
var env struct {
	dir    string // world-readable temp dir for sockets, databases, logs
	bin    string // the xpraproxy binary
	asUser *user.User
	mu     sync.Mutex
	procs  []*exec.Cmd
}

type xpraServer struct {
	name    string // window title, e.g. "sessionA"
	display string // ":N"
	port    int
	sockDir string
	runtime string // XDG_RUNTIME_DIR of a 6.x server
	gen     *generation
}

func TestMain(m *testing.M) {
	code := 1
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "interop setup failed:", err)
	} else {
		code = m.Run()
	}
	teardown()
	os.Exit(code)
}

func setup() error {
	for _, bin := range []string{"/usr/bin/xpra", "/usr/bin/Xvfb", "/usr/bin/import", "/usr/bin/compare", "/usr/bin/xwininfo", "/usr/bin/xterm"} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s is missing: the README's test command installs the xpra peers: %w", bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "xpraproxy-interop-")
	if err != nil {
		return err
	}
	env.dir = dir
	// Every proxy the tests start reads this (absent) directory, never an
	// /etc/xpraproxy that `make install` may have put on the machine.
	os.Setenv("XPRAPROXY_CONF_DIR", filepath.Join(dir, "no-system-conf"))
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup(testUser); err != nil {
			if out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", testUser).CombinedOutput(); err != nil {
				return fmt.Errorf("useradd %s: %v: %s", testUser, err, out)
			}
		}
		if env.asUser, err = user.Lookup(testUser); err != nil {
			return err
		}
	}
	env.bin = filepath.Join(dir, "xpraproxy")
	if out, err := exec.Command("go", "build", "-o", env.bin, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	os.Chmod(env.bin, 0o755)
	for _, asTestUser := range []bool{true, false} {
		rt := runtimeDir(asTestUser)
		if err := os.MkdirAll(rt, 0o700); err != nil {
			return err
		}
		if asTestUser && env.asUser != nil {
			uid, _ := strconv.Atoi(env.asUser.Uid)
			gid, _ := strconv.Atoi(env.asUser.Gid)
			os.Chown(rt, uid, gid)
		}
	}
	if gen6.xpra = os.Getenv("XPRAPROXY_XPRA6"); gen6.xpra == "" {
		// README's test command builds it first; a plain `go test` builds
		// it here (once: it is cached outside the repository).
		out, err := exec.Command("../../interop/xpra6.sh").Output()
		if err != nil {
			return fmt.Errorf("interop/xpra6.sh (the xpra 6.x peer): %v", err)
		}
		gen6.xpra = strings.TrimSpace(string(out))
	}
	var wg sync.WaitGroup
	var errs []error
	var emu sync.Mutex
	for _, g := range generations() {
		g.servers = map[string]*xpraServer{}
		for _, name := range []string{"sessionA", "sessionB", "sessionC", "sessionD"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := g.startXpra(name)
				emu.Lock()
				defer emu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				g.servers[name] = s
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func teardown() {
	for _, g := range generations() {
		for _, s := range g.servers {
			s.stop()
		}
	}
	env.mu.Lock()
	for _, p := range env.procs {
		if p.Process != nil {
			p.Process.Kill()
			p.Wait()
		}
	}
	env.mu.Unlock()
	if env.dir != "" && os.Getenv("XPRAPROXY_KEEP_TEST_DIR") == "" {
		os.RemoveAll(env.dir)
	}
}

// asUser builds a command that runs as the unprivileged test user when
// the tests run as root, and as ourselves otherwise. The process itself
// switches user (no runuser in between), so killing it kills it.
func asUser(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if env.asUser == nil {
		cmd.Env = append(os.Environ(), "XPRA_NOTTY=1")
		return cmd
	}
	uid, _ := strconv.Atoi(env.asUser.Uid)
	gid, _ := strconv.Atoi(env.asUser.Gid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Env = []string{"HOME=" + env.asUser.HomeDir, "USER=" + testUser, "LOGNAME=" + testUser,
		"XPRA_NOTTY=1", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "XPRAPROXY_CONF_DIR=" + os.Getenv("XPRAPROXY_CONF_DIR")}
	return cmd
}

var usedDisplays sync.Map

// freeDisplay picks an X display number nobody uses. A run takes a few
// hundred (every server, proxy and client has one, and a number is never
// reused within a run), so the range is wide.
func freeDisplay() string {
	for tries := 0; ; tries++ {
		if tries > 100000 {
			panic("no free X display number")
		}
		n := 1000 + rand.IntN(30000)
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X11-unix/X%d", n)); err == nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n)); err == nil {
			continue // a stale lock: Xvfb would refuse it
		}
		if _, loaded := usedDisplays.LoadOrStore(n, true); loaded {
			continue
		}
		return ":" + strconv.Itoa(n)
	}
}

// freePort is xpratest's.
func freePort() int { return testenv.FreePort() }

// sharedDir is a new directory under the test run's, readable by the
// test user a proxy may run as.
func sharedDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp(env.dir, prefix+"-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

var windowLine = regexp.MustCompile(`^\s*(0x[0-9a-f]+) "([^"]*)"`)

// windowID finds a window whose title contains title on display.
func windowID(display string, server bool, title string) (string, error) {
	var cmd *exec.Cmd
	if server {
		cmd = asUserX(display, "xwininfo", "-root", "-tree", "-display", display)
	} else {
		cmd = exec.Command("xwininfo", "-root", "-tree", "-display", display)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, tail(out, 300))
	}
	// The largest window with that title: a client may also have small
	// ones whose name contains it (seen: a 10x17 one of a 6.x client on a
	// loaded machine, matched for 30 s while the real one was there).
	best, bestArea := "", -1
	for _, line := range strings.Split(string(out), "\n") {
		m := windowLine.FindStringSubmatch(line)
		if m == nil || !strings.Contains(m[2], title) {
			continue
		}
		area := 0
		if g := windowSize.FindStringSubmatch(line[len(m[0]):]); g != nil {
			w, _ := strconv.Atoi(g[1])
			h, _ := strconv.Atoi(g[2])
			area = w * h
		}
		if area > bestArea {
			best, bestArea = m[1], area
		}
	}
	return best, nil
}

// windowSize is the WIDTHxHEIGHT+X+Y after a window's name in xwininfo -tree.
var windowSize = regexp.MustCompile(`(\d+)x(\d+)[+-]\d+[+-]\d+`)

// snapshot captures a window as PNG.
func snapshot(display string, server bool, id, path string) error {
	args := []string{"-display", display, "-window", id, path}
	var cmd *exec.Cmd
	if server {
		cmd = asUserX(display, "import", args...)
	} else {
		cmd = exec.Command("import", args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("import: %v: %s", err, out)
	}
	return nil
}

// pixelsMatch compares the client's window for server s with the server's
// own xterm window, retrying while the client paints.
func pixelsMatch(t *testing.T, s *xpraServer, c *client, clientTitle string) {
	t.Helper()
	var last string
	// Pixels get 30 s to match once both windows exist; a client still
	// starting up on a loaded machine gets 60 s to show its window at
	// all. (A 6.x client whose hello never came after its TLS handshake
	// was the proxy's TLS session ticket: docs/loop.md.)
	deadline := time.Now().Add(30 * time.Second)
	windowsBy := time.Now().Add(60 * time.Second)
	found := false
	if c.gen.six {
		// 6.x titles its windows "TITLE on :N"; the client's display
		// shows no other window.
		clientTitle = s.name
	}
	for attempt := 0; time.Now().Before(deadline) || (!found && time.Now().Before(windowsBy)); attempt++ {
		cid, cerr := windowID(c.display, false, clientTitle)
		sid, serr := windowID(s.display, true, s.name)
		found = cid != "" && sid != ""
		if !found {
			last = fmt.Sprintf("windows not found (client %q %v, server %q %v)", cid, cerr, sid, serr)
			time.Sleep(500 * time.Millisecond)
			continue
		}
		a := filepath.Join(env.dir, fmt.Sprintf("%s-%s-server-%d-%d.png", s.gen.name, s.name, attempt, rand.IntN(1e9)))
		b := filepath.Join(env.dir, fmt.Sprintf("%s-%s-client-%d-%d.png", s.gen.name, s.name, attempt, rand.IntN(1e9)))
		if err := snapshot(s.display, true, sid, a); err != nil {
			last = err.Error()
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if err := snapshot(c.display, false, cid, b); err != nil {
			last = err.Error()
			time.Sleep(500 * time.Millisecond)
			continue
		}
		out, _ := exec.Command("compare", "-metric", "AE", a, b, "null:").CombinedOutput()
		last = strings.TrimSpace(string(out))
		if last != "0" {
			// What the two captures are, for a failure to be read.
			id, _ := exec.Command("identify", "-format", "%f %wx%h mean %[mean]; ", a, b).CombinedOutput()
			last += " (" + strings.TrimSpace(string(id)) + ")"
		}
		if last == "0" {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("client window %q never matched server %s: last compare %q", clientTitle, s.name, last)
}

// proxy is a running xpraproxy.
type proxy struct {
	cmd     *exec.Cmd
	host    string // the loopback address it listens on
	port    int
	log     string
	sockDir string
	display string
}

func startProxy(t *testing.T, args ...string) *proxy {
	t.Helper()
	return startProxyAs(t, false, args...)
}

// startProxyAs starts xpraproxy as root (privilege-separated workers) when
// root is set, else as the test user.
func startProxyAs(t *testing.T, root bool, args ...string) *proxy {
	t.Helper()
	return launchProxy(t, root, 0, args...)
}

// launchProxy starts xpraproxy (as root or the test user; under prlimit
// with RLIMIT_NOFILE nofile when it is not 0) with args, in which PORT and
// PSOCK name its port and socket directory, and waits for its port.
func launchProxy(t *testing.T, root bool, nofile int, args ...string) *proxy {
	t.Helper()
	return launchProxyOn(t, root, nofile, freePort(), env.bin, args...)
}

// launchProxyOn is launchProxy with the port chosen by the caller (a
// conf file names it) and the binary (an upgrade replaces it).
func launchProxyOn(t *testing.T, root bool, nofile, port int, bin string, args ...string) *proxy {
	t.Helper()
	p := &proxy{port: port, log: filepath.Join(env.dir, fmt.Sprintf("proxy-%d.log", rand.IntN(1e9)))}
	p.display = freeDisplay()
	p.sockDir = filepath.Join(env.dir, fmt.Sprintf("psock-%d", p.port))
	full := []string{"proxy", p.display, "--socket-dir=" + p.sockDir, "--log-file=" + p.log}
	for _, a := range args {
		full = append(full, strings.ReplaceAll(strings.ReplaceAll(a, "PORT", strconv.Itoa(p.port)), "PSOCK", p.sockDir))
	}
	os.MkdirAll(p.sockDir, 0o777)
	os.Chmod(p.sockDir, 0o1777) // like /tmp: workers of any user make their sockets there
	name := bin
	if nofile > 0 {
		lim := strconv.Itoa(nofile)
		name, full = "prlimit", append([]string{"--nofile=" + lim + ":" + lim, bin}, full...)
	}
	if root {
		p.cmd = exec.Command(name, full...)
	} else {
		p.cmd = asUser(name, full...)
	}
	p.cmd.Dir = env.dir
	stderr, err := os.Create(p.log + ".stderr") // what comes before the log file opens
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stderr.Close() })
	p.cmd.Stderr = stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	env.mu.Lock()
	env.procs = append(env.procs, p.cmd)
	env.mu.Unlock()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("proxy log:\n%s", tail(b, 4000))
		}
	})
	p.host = "127.0.0.1"
	for _, a := range args {
		// An instance of a fleet listens on another loopback address.
		if h, ok := strings.CutPrefix(a, "--bind-tcp=127.0.0."); ok {
			p.host = "127.0.0." + strings.SplitN(h, ":", 2)[0]
			break
		}
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", net.JoinHostPort(p.host, strconv.Itoa(p.port))); err == nil {
			c.Close()
			return p
		}
		time.Sleep(100 * time.Millisecond)
	}
	errText, _ := os.ReadFile(p.log + ".stderr")
	t.Fatalf("proxy did not start: %s\n%s", p.logText(), errText)
	return nil
}

func (p *proxy) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// client is a real `xpra attach` under the clients' Xvfb.
type client struct {
	gen      *generation
	cmd      *exec.Cmd
	out      *bytes.Buffer
	mu       *sync.Mutex
	display  string
	waitOnce sync.Once
	done     chan struct{} // closed when the process has exited (one Wait)
}

// waited is closed once the client process has exited: the only Wait.
func (c *client) waited() <-chan struct{} {
	c.waitOnce.Do(func() {
		c.done = make(chan struct{})
		go func() { c.cmd.Wait(); close(c.done) }()
	})
	return c.done
}

type syncBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (s syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// attach starts a client on an Xvfb display of its own, so that no other
// window can cover its windows when they are captured.
func attach(t *testing.T, url string, extra ...string) *client {
	t.Helper()
	return gen31.runClient(t, "attach", url, extra...)
}

// attach is a client of the generation.
func (g *generation) attach(t *testing.T, url string, extra ...string) *client {
	t.Helper()
	return g.runClient(t, "attach", url, extra...)
}

func runClient(t *testing.T, sub, url string, extra ...string) *client {
	t.Helper()
	return gen31.runClient(t, sub, url, extra...)
}

// runClient runs `xpra SUB URL` (attach, or start through a proxy) of
// the generation on an Xvfb display of its own.
func (g *generation) runClient(t *testing.T, sub, url string, extra ...string) *client {
	t.Helper()
	return g.runClientEnv(t, sub, url, nil, extra...)
}

// runClientEnv is runClient with variables added to the client's
// environment.
func (g *generation) runClientEnv(t *testing.T, sub, url string, environ []string, extra ...string) *client {
	t.Helper()
	display := freeDisplay()
	xvfb := exec.Command("Xvfb", display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp")
	if err := xvfb.Start(); err != nil {
		t.Fatal(err)
	}
	env.mu.Lock()
	env.procs = append(env.procs, xvfb)
	env.mu.Unlock()
	t.Cleanup(func() { xvfb.Process.Kill(); xvfb.Wait() })
	for i := 0; i < 50; i++ {
		if _, err := os.Stat("/tmp/.X11-unix/X" + display[1:]); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	args := append([]string{sub, url, "--opengl=no"}, g.quiet()...)
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--mmap=") }) {
		args = append(args, "--mmap=no")
	}
	if g.six && !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--tray=") }) {
		// 6.5.5's tray menu reads the mmap subsystem's attribute, which a
		// client with --mmap=no does not have: its callbacks raise
		// AttributeError on every server setting change, and one raised
		// while a packet is processed has killed the client ("error in
		// network packet reading/parsing").
		args = append(args, "--tray=no")
	}
	if g.six && slices.Contains(extra, "--ssl-server-verify-mode=none") {
		args = append(args, "--ssl-check-hostname=no")
	}
	if g.six && !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--reconnect=") }) {
		// 6.x clients reconnect by themselves when a connection is lost
		// (3.1.3's do not): a refusal whose socket end beats the reason
		// would start them over, with the same wrong password.
		args = append(args, "--reconnect=no")
	}
	args = append(args, extra...)
	cmd := g.command(false, args...)
	cmd.Env = append(cmd.Env, "DISPLAY="+display)
	if strings.HasPrefix(url, "ssh://") {
		cmd.Env = append(cmd.Env, sshClientEnv...)
	}
	cmd.Env = append(cmd.Env, environ...)
	c := &client{gen: g, cmd: cmd, out: &bytes.Buffer{}, mu: &sync.Mutex{}, display: display}
	logf, err := os.Create(filepath.Join(env.dir, fmt.Sprintf("client-%d.log", rand.IntN(1e9))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd.Stdout = io.MultiWriter(syncBuf{c.mu, c.out}, logf)
	cmd.Stderr = cmd.Stdout
	// The client's own children (6.x's helpers, a socket attach's
	// subprocesses) inherit its output pipe: they die with its process
	// group, and Wait gives up on the pipe after WaitDelay (a CI run hung
	// six minutes in a client's Wait once).
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	env.mu.Lock()
	env.procs = append(env.procs, cmd)
	env.mu.Unlock()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("client %s log:\n%s", url, tail([]byte(c.text()), 3000))
		}
	})
	return c
}

func (c *client) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

func (c *client) stop() {
	if c.cmd.Process != nil {
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		c.cmd.Process.Kill()
		<-c.waited()
	}
}

// exited waits for the client to exit and returns its output.
func (c *client) exited(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case <-c.waited():
	case <-time.After(timeout):
		t.Fatalf("client still running after %v:\n%s", timeout, tail([]byte(c.text()), 2000))
	}
	return c.text()
}

// running reports whether the client process is alive.
func (c *client) running() bool {
	select {
	case <-c.waited():
		return false
	default:
		return c.cmd.Process.Signal(syscallZero) == nil
	}
}

// sqliteDB makes a database with the xpraproxy sqlite command, as the
// user the proxy runs as.
func sqliteDB(t *testing.T, rows ...[]string) string {
	t.Helper()
	db := filepath.Join(env.dir, fmt.Sprintf("auth-%d.sdb", rand.IntN(1e9)))
	run := func(args ...string) {
		if out, err := asUser(env.bin, append([]string{"sqlite", db}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("xpraproxy sqlite %v: %v: %s", args, err, out)
		}
	}
	run("create")
	for _, r := range rows {
		run(append([]string{"add"}, r...)...)
	}
	return db
}

var syscallZero = syscall.Signal(0)
