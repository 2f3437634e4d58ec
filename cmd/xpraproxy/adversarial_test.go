package main

// The adversarial suite (issue 12): a proxy started as the unprivileged
// test user, with a low RLIMIT_NOFILE and --html=on, attacked the way a
// stranger on a public port would. Before the attacks a real xpra client
// is attached to a real server and a simulated client relays to a
// simulated server; after each attack the suite asserts that the proxy is
// alive, its peak RSS stayed under the case's stated bound, the relaying
// session still echoes, a correct login works, and the proxy's open fds
// return to their baseline. At the end the real client's window is still
// pixel-exact.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

// attackNofile is the proxy's RLIMIT_NOFILE in the suite: its default caps
// are derived from it (480 connections, 120 logging in).
const attackNofile = 1024

// siege is one proxy under attack and the sessions watched throughout.
type siege struct {
	t         *testing.T
	p         *proxy
	pid       int
	addr      string
	echo      *xpratest.Server
	victim    *xpratest.Server // killed by a case
	neighbour *xpratest.Client
	baseFDs   int
	baseRSS   int64
	report    []attackResult
	nextSrc   int
}

type attackResult struct {
	Case    string `json:"case"`
	PeakRSS int64  `json:"peak_rss_kb"`
	Growth  int64  `json:"growth_kb"`
	Bound   int64  `json:"bound_kb"`
	Outcome string `json:"outcome"`
}

// source returns a fresh loopback address, so that cases do not share the
// per-address limits unless they mean to.
func (s *siege) source() string {
	s.nextSrc++
	return fmt.Sprintf("127.0.%d.%d", 10+s.nextSrc/250, 1+s.nextSrc%250)
}

// startLimitedProxy runs xpraproxy as the test user under prlimit.
func startLimitedProxy(t *testing.T, nofile int, args ...string) *proxy {
	t.Helper()
	p := &proxy{port: freePort(), log: filepath.Join(env.dir, fmt.Sprintf("siege-%d.log", freePort()))}
	p.display = freeDisplay()
	p.sockDir = filepath.Join(env.dir, fmt.Sprintf("psock-%d", p.port))
	os.MkdirAll(p.sockDir, 0o777)
	os.Chmod(p.sockDir, 0o1777)
	full := []string{"--nofile=" + strconv.Itoa(nofile) + ":" + strconv.Itoa(nofile), env.bin, "proxy", p.display,
		"--socket-dir=" + p.sockDir, "--log-file=" + p.log}
	for _, a := range args {
		full = append(full, strings.ReplaceAll(a, "PORT", strconv.Itoa(p.port)))
	}
	p.cmd = asUser("prlimit", full...)
	p.cmd.Dir = env.dir
	stderr, err := os.Create(p.log + ".stderr")
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
			t.Logf("proxy log:\n%s", tail(b, 6000))
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

func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

func (s *siege) alive() bool {
	return s.p.cmd.ProcessState == nil && s.p.cmd.Process.Signal(syscallZero) == nil
}

// login logs user in from a fresh address and returns the client.
func (s *siege) login(user, password string) (*xpratest.Client, frame.Packet, error) {
	c, err := xpratest.Dial(s.addr, s.source())
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Login(user, password, nil)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, p, nil
}

// correctLogin asserts that a correct login reaches its server quickly.
func (s *siege) correctLogin(when string) {
	s.t.Helper()
	start := time.Now()
	c, p, err := s.login("good", "goodpw")
	if err != nil || p.Type() != "hello" {
		s.t.Errorf("%s: correct login failed: %v %v", when, err, p)
		return
	}
	defer c.Close()
	if err := c.Ping(5 * time.Second); err != nil {
		s.t.Errorf("%s: new session does not echo: %v", when, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		s.t.Errorf("%s: correct login took %v", when, d)
	}
}

// attack runs one case and the checks after it; boundMB is the stated
// bound on the proxy's RSS growth during the case.
func (s *siege) attack(name string, boundMB int64, run func(s *siege) string) {
	s.t.Helper()
	// Reset the peak RSS (VmHWM) so that it measures this case alone.
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.pid), []byte("5"), 0)
	before := procStatus(s.pid, "VmRSS")
	outcome := run(s)
	peak := procStatus(s.pid, "VmHWM")
	r := attackResult{Case: name, PeakRSS: peak, Growth: peak - before, Bound: boundMB << 10, Outcome: outcome}
	s.report = append(s.report, r)
	s.t.Logf("%-28s peak RSS %6d KB (+%6d KB, bound +%d MB): %s", name, peak, r.Growth, boundMB, outcome)
	if !s.alive() {
		s.t.Fatalf("%s: the proxy died", name)
	}
	if r.Growth > r.Bound {
		s.t.Errorf("%s: RSS grew by %d KB, over the %d MB bound", name, r.Growth, boundMB)
	}
	if err := s.neighbour.Ping(5 * time.Second); err != nil {
		s.t.Errorf("%s: the session relaying before the attack no longer echoes: %v", name, err)
	}
	s.correctLogin("after " + name)
	// fds come back once the attack's connections are closed (login
	// timeout 5 s, TLS handshakes 5 s, close grace 1 s).
	deadline := time.Now().Add(20 * time.Second)
	for openFDs(s.pid) > s.baseFDs+8 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := openFDs(s.pid); n > s.baseFDs+8 {
		s.t.Errorf("%s: %d fds open, baseline %d", name, n, s.baseFDs)
	}
}

func TestAdversarialSuite(t *testing.T) {
	echo, err := xpratest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(echo.Close)
	echo2, err := xpratest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(echo2.Close)
	silent, err := xpratest.StartSilentServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(silent.Close)
	a := srv(t, "sessionA")
	db := sqliteDB(t,
		[]string{"gtk", "gtkpw", "", "", target(a)},
		[]string{"good", "goodpw", "", "", echo.URL()},
		[]string{"neighbour", "npw", "", "", echo.URL()},
		[]string{"victim", "vpw", "", "", echo2.URL()},
		[]string{"slow", "spw", "", "", silent.URL()},
		[]string{"cred", "cpw", "", "", "tcp://backuser:SECRETPW@" + echo.Addr() + "/"})
	dir, err := os.MkdirTemp(env.dir, "siege-tls-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	cert, key, err := selfsigned.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(key, 0o644) // the proxy runs as the test user
	p := startLimitedProxy(t, attackNofile, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		"--html=on", "--ssl-cert="+cert, "--ssl-key="+key, "--login-timeout=5", "--connect-timeout=5", "--proxy-ping=0")
	s := &siege{t: t, p: p, pid: p.cmd.Process.Pid, addr: fmt.Sprintf("127.0.0.1:%d", p.port), echo: echo, victim: echo2}

	// The sessions watched throughout.
	gtkURL := fmt.Sprintf("tcp://gtk:gtkpw@127.0.0.1:%d/", p.port)
	gtk := attach(t, gtkURL)
	gtkTitle := fmt.Sprintf("sessionA on tcp://gtk@127.0.0.1:%d/", p.port)
	pixelsMatch(t, a, gtk, gtkTitle)
	n, hello, err := s.login("neighbour", "npw")
	if err != nil || hello.Type() != "hello" {
		t.Fatalf("neighbour login: %v %v", err, hello)
	}
	s.neighbour = n
	t.Cleanup(func() { n.Close() })
	if err := n.Ping(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	s.baseFDs, s.baseRSS = openFDs(s.pid), procStatus(s.pid, "VmRSS")
	t.Logf("baseline: %d fds, RSS %d KB", s.baseFDs, s.baseRSS)

	for _, c := range attackCases {
		s.attack(c.name, c.boundMB, c.run)
		if t.Failed() && os.Getenv("XPRAPROXY_SIEGE_KEEP_GOING") == "" {
			break
		}
	}

	if !gtk.running() {
		t.Fatalf("the real xpra client exited during the attacks:\n%s", tail([]byte(gtk.text()), 2000))
	}
	pixelsMatch(t, a, gtk, gtkTitle)
	log := p.logText()
	if strings.Contains(log, "SECRETPW") {
		t.Error("a backend password reached the log")
	}
	for _, line := range strings.Split(log, "\n") {
		if len(line) > 2048 {
			t.Errorf("a log line of %d bytes: %.200s", len(line), line)
		}
	}
	if out := os.Getenv("XPRAPROXY_SIEGE_REPORT"); out != "" {
		f, err := os.Create(out)
		if err == nil {
			for _, r := range s.report {
				b, _ := json.Marshal(r)
				f.Write(append(b, '\n'))
			}
			f.Close()
		}
	}
}

// hold keeps conns open until release is closed, then closes them.
func hold(conns []net.Conn) func() {
	return func() {
		for _, c := range conns {
			c.Close()
		}
	}
}

// rawDial opens n connections from source (each a new address when
// source is ""), dropping failures.
func (s *siege) rawDial(n int, source func() string) []net.Conn {
	var out []net.Conn
	for i := 0; i < n; i++ {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source())}}
		c, err := d.Dial("tcp", s.addr)
		if err == nil {
			out = append(out, c)
		}
	}
	return out
}

// readAll reads what the proxy says until it closes or timeout.
func readAll(c net.Conn, timeout time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if sb.Len() < 4<<20 {
			sb.Write(buf[:n])
		}
		if err != nil {
			return sb.String(), err
		}
	}
}

// parallel runs f for each connection at once and collects what the
// proxy answered.
func parallel(conns []net.Conn, f func(c net.Conn) string) []string {
	out := make([]string, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = f(c)
		}()
	}
	wg.Wait()
	return out
}

// Running out of file descriptors is survived: with the caps switched off
// and RLIMIT_NOFILE at 256, 400 idle connections make accept fail with
// EMFILE; the proxy keeps relaying the session it had, keeps running, and
// accepts again once the connections are gone.
func TestFDExhaustionSurvived(t *testing.T) {
	echo, err := xpratest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(echo.Close)
	db := sqliteDB(t, []string{"good", "goodpw", "", "", echo.URL()})
	p := startLimitedProxy(t, 256, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--proxy-ping=0",
		"--max-connections=0", "--max-login-connections=0", "--max-logins-per-source=0", "--login-timeout=20")
	s := &siege{t: t, p: p, pid: p.cmd.Process.Pid, addr: fmt.Sprintf("127.0.0.1:%d", p.port)}
	n, hello, err := s.login("good", "goodpw")
	if err != nil || hello.Type() != "hello" {
		t.Fatalf("login: %v %v", err, hello)
	}
	defer n.Close()
	conns := s.rawDial(400, s.tenAddresses())
	// The kernel completes connections into the backlog whether or not
	// the proxy can accept them; wait until the proxy has hit the limit.
	eventually(t, "the proxy at its fd limit", 10*time.Second, func() bool { return openFDs(s.pid) >= 250 })
	eventually(t, "accept failures logged", 15*time.Second, func() bool {
		return strings.Contains(p.logText(), "cannot accept connections")
	})
	if !s.alive() {
		t.Fatal("the proxy died at its fd limit")
	}
	if err := n.Ping(5 * time.Second); err != nil {
		t.Errorf("the relaying session at the fd limit: %v", err)
	}
	hold(conns)()
	eventually(t, "fds back", 30*time.Second, func() bool { return openFDs(s.pid) < 40 })
	s.correctLogin("after fd exhaustion")
	if err := n.Ping(5 * time.Second); err != nil {
		t.Errorf("the relaying session after fd exhaustion: %v", err)
	}
	if !s.alive() {
		t.Fatal("the proxy died")
	}
}
