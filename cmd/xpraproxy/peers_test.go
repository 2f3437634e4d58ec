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

// generation is one xpra release line the tests run against.
type generation struct {
	name    string // subtest name: "3.1" or "6.x"
	xpra    string // its xpra program
	six     bool   // xpra ≥ 6: nested caps, rencodeplus only, its own runtime dir
	servers map[string]*xpraServer
}

var (
	gen31 = &generation{name: "3.1", xpra: "/usr/bin/xpra"}
	gen6  = &generation{name: "6.x", six: true}
)

// generations are both, oldest first.
func generations() []*generation { return []*generation{gen31, gen6} }

// forEachGen runs f as one subtest per generation ("3.1", "6.x"), side by
// side: each generation has servers of its own.
func forEachGen(t *testing.T, f func(t *testing.T, g *generation)) {
	t.Helper()
	for _, g := range generations() {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			f(t, g)
		})
	}
}

// quietFor is the quiet options for the generation (6.x has no
// --dbus-proxy; its wrapper's config turns dbus off).
func (g *generation) quiet() []string {
	if g.six {
		return quiet[:len(quiet)-1]
	}
	return quiet
}

// runtimeDir is XDG_RUNTIME_DIR for 6.x processes of the test user (as
// true) or of this process: 6.x keeps sockets and X cookies there.
func runtimeDir(asTestUser bool) string {
	if asTestUser {
		return filepath.Join(env.dir, "run6-user")
	}
	return filepath.Join(env.dir, "run6-self")
}

// command runs the generation's xpra as the test user (asUser) or as
// this process, with the generation's environment.
func (g *generation) command(asTestUser bool, args ...string) *exec.Cmd {
	return g.commandIn(runtimeDir(asTestUser), asTestUser, args...)
}

// commandIn is command with XDG_RUNTIME_DIR rt for 6.x (each 6.x server
// has its own, so that its <rt>/xpra/N/socket is alone there).
func (g *generation) commandIn(rt string, asTestUser bool, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if asTestUser {
		cmd = asUser(g.xpra, args...)
	} else {
		cmd = exec.Command(g.xpra, args...)
		cmd.Env = append(os.Environ(), "XPRA_NOTTY=1")
	}
	if g.six {
		cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+rt)
	}
	return cmd
}

// srv returns the generation's server named name (sessionA...).
func (g *generation) srv(t *testing.T, name string) *xpraServer {
	t.Helper()
	s := g.servers[name]
	if s == nil {
		t.Fatalf("xpra %s server %s did not start", g.name, name)
	}
	return s
}

type xpraServer struct {
	name    string // window title, e.g. "sessionA"
	display string // ":N"
	port    int
	sockDir string
	runtime string // XDG_RUNTIME_DIR of a 6.x server
	gen     *generation
}

// stop stops the server with its own generation's xpra.
func (s *xpraServer) stop() ([]byte, error) {
	return s.gen.commandIn(s.runtime, true, "stop", s.display, "--socket-dir="+s.sockDir, "--socket-dirs="+s.sockDir).CombinedOutput()
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
		"XPRA_NOTTY=1", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	return cmd
}

var usedDisplays sync.Map

// freeDisplay picks an X display number nobody uses.
func freeDisplay() string {
	for {
		n := 300 + rand.IntN(600)
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

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mmapServer is the server of each generation that offers mmap (the
// others of 3.1.3 run with --mmap=no; clients say --mmap=no unless a test
// asks for it).
const mmapServer = "sessionD"

// startXpra starts a 3.1.3 server (the tests that are not per generation).
func startXpra(name string, extra ...string) (*xpraServer, error) {
	return gen31.startXpra(name, extra...)
}

// startXpra starts a server of the generation, as the test user, running
// an xterm titled name.
func (g *generation) startXpra(name string, extra ...string) (*xpraServer, error) {
	s := &xpraServer{name: name, display: freeDisplay(), port: freePort(), sockDir: filepath.Join(env.dir, "sock-"+g.name+"-"+name), gen: g}
	if err := os.MkdirAll(s.sockDir, 0o777); err != nil {
		return nil, err
	}
	os.Chmod(s.sockDir, 0o777)
	s.runtime = filepath.Join(env.dir, "run6-"+name+"-"+s.display[1:])
	if g.six {
		if err := os.MkdirAll(s.runtime, 0o700); err != nil {
			return nil, err
		}
		if env.asUser != nil {
			uid, _ := strconv.Atoi(env.asUser.Uid)
			gid, _ := strconv.Atoi(env.asUser.Gid)
			os.Chown(s.runtime, uid, gid)
		}
	}
	logFile := fmt.Sprintf("server-%s-%s.log", g.name, name)
	args := append([]string{"start", s.display,
		"--start=xterm -title " + name + " -xrm XTerm*allowTitleOps:false -geometry 60x12+0+100 -e bash -c 'echo this is " + name + "; exec bash'",
		"--bind-tcp=127.0.0.1:" + strconv.Itoa(s.port), "--daemon=yes", "--systemd-run=no",
		"--socket-dir=" + s.sockDir, "--socket-dirs=" + s.sockDir, "--log-dir=" + env.dir, "--log-file=" + logFile}, g.quiet()...)
	if !g.six && name != mmapServer {
		// xpra 6.5.5's server fails every connection with --mmap=no (its
		// window compressor imports the module the option blocks); its
		// clients turn mmap off instead.
		args = append(args, "--mmap=no")
	}
	args = append(args, extra...)
	if out, err := g.commandIn(s.runtime, true, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("xpra %s start %s: %v: %s", g.name, name, err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port)); err == nil {
			c.Close()
			if id, _ := windowID(s.display, true, name); id != "" {
				return s, nil
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(env.dir, logFile))
	return nil, fmt.Errorf("xpra %s server %s (%s) did not come up:\n%s", g.name, name, s.display, tail(log, 2000))
}

// serverXAuth is the X cookie file of a 6.x server's display (6.x keeps
// it in its runtime dir, XPRA_PRIVATE_XAUTH: Xauthority-N, or
// Xauthority-S<pid> for a session started with --displayfd); "" for
// 3.1.3's displays (~/.Xauthority).
func serverXAuth(display string) string {
	n := strings.TrimPrefix(display, ":")
	var files []string
	for _, p := range []string{filepath.Join(env.dir, "run6-*", "xpra", "Xauthority-*"),
		filepath.Join(env.dir, "*", "runtime", "xpra", "Xauthority-*")} {
		m, _ := filepath.Glob(p)
		files = append(files, m...)
	}
	for _, f := range files {
		if xauthHas(f, n) {
			return f
		}
	}
	return ""
}

// xauthHas reports whether an Xauthority file has an entry for display
// number n (entries: family, then address, number, name and data, each a
// 16-bit big-endian length and its bytes).
func xauthHas(file, n string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	field := func() ([]byte, bool) {
		if len(b) < 2 {
			return nil, false
		}
		l := int(b[0])<<8 | int(b[1])
		if len(b) < 2+l {
			return nil, false
		}
		f := b[2 : 2+l]
		b = b[2+l:]
		return f, true
	}
	for len(b) >= 2 {
		b = b[2:] // family
		_, ok1 := field()
		num, ok2 := field()
		_, ok3 := field()
		_, ok4 := field()
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return false
		}
		if string(num) == n {
			return true
		}
	}
	return false
}

// asUserX runs an X tool against a server's display as the test user.
func asUserX(display string, name string, args ...string) *exec.Cmd {
	cmd := asUser(name, args...)
	if xa := serverXAuth(display); xa != "" {
		cmd.Env = append(cmd.Env, "XAUTHORITY="+xa)
	}
	return cmd
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
	for _, line := range strings.Split(string(out), "\n") {
		if m := windowLine.FindStringSubmatch(line); m != nil && strings.Contains(m[2], title) {
			return m[1], nil
		}
	}
	return "", nil
}

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
	deadline := time.Now().Add(30 * time.Second)
	if c.gen.six {
		// 6.x titles its windows "TITLE on :N"; the client's display
		// shows no other window.
		clientTitle = s.name
	}
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		cid, cerr := windowID(c.display, false, clientTitle)
		sid, serr := windowID(s.display, true, s.name)
		if cid == "" || sid == "" {
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
	p := &proxy{port: freePort(), log: filepath.Join(env.dir, fmt.Sprintf("proxy-%d.log", rand.IntN(1e9)))}
	p.display = freeDisplay()
	p.sockDir = filepath.Join(env.dir, fmt.Sprintf("psock-%d", p.port))
	full := []string{"proxy", p.display, "--socket-dir=" + p.sockDir, "--log-file=" + p.log}
	for _, a := range args {
		full = append(full, strings.ReplaceAll(strings.ReplaceAll(a, "PORT", strconv.Itoa(p.port)), "PSOCK", p.sockDir))
	}
	os.MkdirAll(p.sockDir, 0o777)
	os.Chmod(p.sockDir, 0o1777) // like /tmp: workers of any user make their sockets there
	name := env.bin
	if nofile > 0 {
		lim := strconv.Itoa(nofile)
		name, full = "prlimit", append([]string{"--nofile=" + lim + ":" + lim, env.bin}, full...)
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
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port)); err == nil {
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
	gen     *generation
	cmd     *exec.Cmd
	out     *bytes.Buffer
	mu      *sync.Mutex
	display string
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
	if g.six && slices.Contains(extra, "--ssl-server-verify-mode=none") {
		args = append(args, "--ssl-check-hostname=no")
	}
	args = append(args, extra...)
	cmd := g.command(false, args...)
	cmd.Env = append(cmd.Env, "DISPLAY="+display)
	c := &client{gen: g, cmd: cmd, out: &bytes.Buffer{}, mu: &sync.Mutex{}, display: display}
	logf, err := os.Create(filepath.Join(env.dir, fmt.Sprintf("client-%d.log", rand.IntN(1e9))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd.Stdout = io.MultiWriter(syncBuf{c.mu, c.out}, logf)
	cmd.Stderr = cmd.Stdout
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
	if c.cmd.ProcessState == nil && c.cmd.Process != nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
}

// exited waits for the client to exit and returns its output.
func (c *client) exited(t *testing.T, timeout time.Duration) string {
	t.Helper()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("client still running after %v:\n%s", timeout, tail([]byte(c.text()), 2000))
	}
	return c.text()
}

// running reports whether the client process is alive.
func (c *client) running() bool {
	return c.cmd.ProcessState == nil && c.cmd.Process.Signal(syscallZero) == nil
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
