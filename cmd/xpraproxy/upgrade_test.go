package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/accesstest"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

// An upgrade with real clients of each generation over tcp and ws, each
// streaming an animated window (docs/upgrade.md, step 2): a new binary
// that cannot start is refused and the old one serves on; a good one
// takes the listening socket without a single connection refused and
// both live sessions; a TLS session stays in the old process, which exits
// when it ends; the clients go on,
// the same processes, with nothing in their logs about a lost connection
// or a reconnect, pixel for pixel; the new process writes each session's
// one access line when it ends.
func TestUpgradeRealClient(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) { testUpgradeLive(t, g, false) })
}

// As root the same: each old worker hands its sessions, through the old
// and the new main process, to a new worker of the same account.
func TestUpgradeRealClientAsRoot(t *testing.T) {
	testenv.NeedRoot(t)
	forEachGen(t, func(t *testing.T, g *generation) { testUpgradeLive(t, g, true) })
}

// A session that cannot be handed over (TLS: its record layer cannot
// leave the process) goes on in the old process, pixel for pixel, until
// the drain timeout ends it with the reason; as root, in the old
// process's worker.
func TestUpgradeDrainAsRoot(t *testing.T) {
	testenv.NeedRoot(t)
	forEachGen(t, func(t *testing.T, g *generation) { testUpgrade(t, g, true) })
}

// installBinary puts a copy of src at dst by renaming a new file over it,
// as a package manager replaces a running binary.
func installBinary(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	tmp := dst + ".new"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

func testUpgrade(t *testing.T, g *generation, root bool) {
	a, c := g.srv(t, "sessionA"), g.srv(t, "sessionB") // sessionC is killed by an earlier test
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)},
		[]string{"moo", "cow", "nobody", "nogroup", target(c)})
	dir := sharedDir(t, "upgrade")
	bin := filepath.Join(dir, "xpraproxy")
	installBinary(t, env.bin, bin)
	// Long enough for the steps before the drained client is looked at
	// (a new client attached and compared: over 10 s on a loaded
	// machine once, and the drain had already told the old one).
	const drain = 20 * time.Second
	cert, key := writeCert(t)
	p := launchProxyOn(t, root, 0, freePort(), bin, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		fmt.Sprintf("--upgrade-drain-timeout=%d", int(drain/time.Second)), "--ssl-cert="+cert, "--ssl-key="+key)
	oldPID := p.cmd.Process.Pid
	addr := fmt.Sprintf("127.0.0.1:%d", p.port)
	upgrade := func() (string, error) {
		out, err := exec.Command(env.bin, "upgrade", p.display, "--socket-dir="+p.sockDir).CombinedOutput()
		return string(out), err
	}

	before := g.attach(t, fmt.Sprintf("ssl://foo:bar@%s/", addr), "--ssl-server-verify-mode=none")
	title := fmt.Sprintf("sessionA on ssl://foo@%s/", addr)
	pixelsMatch(t, a, before, title)

	// A new binary that fails: refused with why, nothing changes.
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'cannot start: broken build' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	installBinary(t, broken, bin)
	if out, err := upgrade(); err == nil || !strings.Contains(out, "exited before it served") {
		t.Fatalf("an upgrade to a broken binary: %v: %s", err, out)
	}
	if !strings.Contains(p.logText(), "upgrade failed; this process keeps serving") {
		t.Errorf("the failed upgrade is not in the log:\n%s", tail([]byte(p.logText()), 1500))
	}
	if !before.running() {
		t.Fatalf("the client exited at a failed upgrade:\n%s", tail([]byte(before.text()), 2000))
	}

	// The good binary: connections during the upgrade are never refused.
	installBinary(t, env.bin, bin)
	stopDial := dialing(addr)
	out, err := upgrade()
	m := regexp.MustCompile(`new process (\d+) serves`).FindStringSubmatch(out)
	if err != nil || m == nil {
		stopDial()
		t.Fatalf("upgrade: %v: %s", err, out)
	}
	newPID, _ := strconv.Atoi(m[1])
	killAtCleanup(t, newPID)
	time.Sleep(500 * time.Millisecond)
	if dials, refused := stopDial(); refused != 0 {
		t.Errorf("%d of %d connections refused during the upgrade", refused, dials)
	}

	// New sessions reach the new process (its socket answers info once
	// the old one has stopped accepting).
	var info []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		info, err = exec.Command(env.bin, "info", p.display, "--socket-dir="+p.sockDir).CombinedOutput()
		if strings.Contains(string(info), fmt.Sprintf("server.pid=%d", newPID)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("info after the upgrade is not the new process %d: %v\n%s", newPID, err, tail(info, 1500))
		}
	}
	after := g.attach(t, fmt.Sprintf("tcp://moo:cow@%s/", addr))
	pixelsMatch(t, c, after, fmt.Sprintf("sessionB on tcp://moo@%s/", addr))

	// The old process drains: its client goes on, then is told why.
	if !before.running() {
		t.Fatalf("the client attached before the upgrade exited:\n%s", tail([]byte(before.text()), 2000))
	}
	pixelsMatch(t, a, before, title)
	deadline := time.Now().Add(drain + 20*time.Second)
	for !strings.Contains(before.text(), upgradeReason) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(before.text(), upgradeReason) {
		t.Errorf("the drained client was not told %q:\n%s", upgradeReason, tail([]byte(before.text()), 2000))
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the old process %d exited with %v", oldPID, err)
		}
	case <-time.After(20 * time.Second):
		syscall.Kill(oldPID, syscall.SIGQUIT) // its goroutines, for the failure to be read
		time.Sleep(2 * time.Second)
		b, _ := os.ReadFile(p.log + ".stderr")
		t.Logf("the old process's stderr:\n%s", tail(b, 20000))
		t.Errorf("the old process %d still runs after its drain", oldPID)
	}
	// The old process's access line for the drained session.
	lines, err := accesstest.Parse([]byte(p.logText()), "text")
	if err != nil {
		t.Fatal(err)
	}
	drained := 0
	for _, r := range accesstest.Records(lines) {
		if r["user"] == "foo" {
			if r["reason"] != "upgrade-drain" || r["code"] != "UR" || !strings.Contains(r["text"], upgradeReason) {
				t.Errorf("access line of the drained session: %v", r)
			}
			drained++
		}
	}
	if drained != 1 {
		t.Errorf("%d access lines for the drained session, want 1", drained)
	}
	if !after.running() {
		t.Fatalf("the client of the new process exited when the old one did:\n%s", tail([]byte(after.text()), 2000))
	}
	pixelsMatch(t, c, after, fmt.Sprintf("sessionB on tcp://moo@%s/", addr))
	after.stop()
	before.stop()
}

// animation writes four frames of noise for animate(1).
func animation(t *testing.T) []string {
	t.Helper()
	var frames []string
	for i := range 4 {
		f := filepath.Join(env.dir, fmt.Sprintf("upgrade-noise-%d.png", i))
		if out, err := exec.Command("convert", "-size", "320x240", "xc:", "+noise", "Random", f).CombinedOutput(); err != nil {
			t.Fatalf("convert: %v %s", err, out)
		}
		os.Chmod(f, 0o644)
		frames = append(frames, f)
	}
	return frames
}

func testUpgradeLive(t *testing.T, g *generation, root bool) {
	a, b, d := g.srv(t, "sessionA"), g.srv(t, "sessionB"), g.srv(t, "sessionD") // sessionC is killed by an earlier test
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)},
		[]string{"wsu", "pw", "nobody", "nogroup", target(b)},
		[]string{"tls", "pw", "nobody", "nogroup", target(d)},
		[]string{"moo", "cow", "nobody", "nogroup", target(d)})
	dir := sharedDir(t, "upgrade-live")
	bin := filepath.Join(dir, "xpraproxy")
	installBinary(t, env.bin, bin)
	cert, key := writeCert(t)
	p := launchProxyOn(t, root, 0, freePort(), bin, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		"--ssl-cert="+cert, "--ssl-key="+key)
	oldPID := p.cmd.Process.Pid
	addr := fmt.Sprintf("127.0.0.1:%d", p.port)
	upgrade := func() (string, error) {
		out, err := exec.Command(env.bin, "upgrade", p.display, "--socket-dir="+p.sockDir).CombinedOutput()
		return string(out), err
	}
	tcpClient := g.attach(t, fmt.Sprintf("tcp://foo:bar@%s/", addr))
	tcpTitle := fmt.Sprintf("sessionA on tcp://foo@%s/", addr)
	pixelsMatch(t, a, tcpClient, tcpTitle)
	wsClient := g.attach(t, fmt.Sprintf("ws://wsu:pw@%s/", addr))
	wsTitle := fmt.Sprintf("sessionB on ws://wsu@%s/", addr)
	pixelsMatch(t, b, wsClient, wsTitle)
	// A TLS session cannot be handed over: it stays in the old process.
	tlsClient := g.attach(t, fmt.Sprintf("ssl://tls:pw@%s/", addr), "--ssl-server-verify-mode=none")
	tlsTitle := fmt.Sprintf("sessionD on ssl://tls@%s/", addr)
	pixelsMatch(t, d, tlsClient, tlsTitle)

	// A new binary that fails: refused with why, nothing changes.
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'cannot start: broken build' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	installBinary(t, broken, bin)
	if out, err := upgrade(); err == nil || !strings.Contains(out, "exited before it served") {
		t.Fatalf("an upgrade to a broken binary: %v: %s", err, out)
	}

	// Both servers stream an animated window through the upgrade.
	frames := animation(t)
	var anims []*exec.Cmd
	for _, s := range []*xpraServer{a, b} {
		anim := asUserX(s.display, "timeout", append([]string{"12", "animate", "-delay", "4"}, frames...)...)
		anim.Env = append(anim.Env, "DISPLAY="+s.display)
		if err := anim.Start(); err != nil {
			t.Fatal(err)
		}
		anims = append(anims, anim)
	}
	time.Sleep(3 * time.Second) // the draws are flowing

	installBinary(t, env.bin, bin)
	stopDial := dialing(addr)
	out, err := upgrade()
	for try := 0; try < 5 && strings.Contains(out, "text file busy"); try++ {
		// A fork elsewhere in this test process (the other generation's)
		// held the new binary's write descriptor for a moment (Go #22315).
		time.Sleep(time.Second)
		out, err = upgrade()
	}
	m := regexp.MustCompile(`new process (\d+) serves; (\d+) sessions handed over in [0-9.]+ms; process \d+ drains (\d+)`).FindStringSubmatch(out)
	dials, refused := stopDial()
	if err != nil || m == nil {
		syscall.Kill(oldPID, syscall.SIGQUIT) // its goroutines, for the failure to be read
		time.Sleep(2 * time.Second)
		b, _ := os.ReadFile(p.log + ".stderr")
		t.Logf("the old process's stderr:\n%s", tail(b, 30000))
		t.Fatalf("upgrade: %v: %s\nlog:\n%s", err, out, tail([]byte(p.logText()), 6000))
	}
	newPID, _ := strconv.Atoi(m[1])
	killAtCleanup(t, newPID)
	if m[2] != "2" || m[3] != "1" {
		t.Errorf("%s sessions handed over and %s kept, want 2 and 1 (TLS): %s", m[2], m[3], out)
	}
	if refused != 0 {
		t.Errorf("%d of %d connections refused during the upgrade", refused, dials)
	}
	for _, anim := range anims {
		anim.Wait() // ends by its timeout
	}
	lost := regexp.MustCompile(`(?i)connection lost|reconnect|disconnected|server shutdown`)
	for _, c := range []struct {
		cl    *client
		s     *xpraServer
		title string
	}{{tcpClient, a, tcpTitle}, {wsClient, b, wsTitle}, {tlsClient, d, tlsTitle}} {
		if !c.cl.running() {
			t.Fatalf("a client exited across the upgrade:\n%s", tail([]byte(c.cl.text()), 2000))
		}
		pixelsMatch(t, c.s, c.cl, c.title)
		if l := lost.FindString(c.cl.text()); l != "" {
			t.Errorf("the client's log says %q across the upgrade:\n%s", l, tail([]byte(c.cl.text()), 2000))
		}
	}
	// The old process drains its TLS session, and exits when it ends.
	if syscall.Kill(oldPID, 0) != nil {
		t.Fatalf("the old process %d exited while its TLS session relays", oldPID)
	}
	tlsClient.stop()
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the old process %d exited with %v", oldPID, err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("the old process %d still runs with no session left", oldPID)
	}
	// New sessions reach the new process.
	after := g.attach(t, fmt.Sprintf("tcp://moo:cow@%s/", addr))
	pixelsMatch(t, d, after, fmt.Sprintf("sessionD on tcp://moo@%s/", addr))
	if log := p.logText(); !strings.Contains(log, "sessions taken over") || !strings.Contains(log, "adopted=2") {
		t.Errorf("the new process does not say it took both sessions:\n%s", tail([]byte(log), 3000))
	}
	tcpClient.stop()
	wsClient.stop()
	after.stop()
	// One access line per session, the new process's, none a drain.
	deadline := time.Now().Add(15 * time.Second)
	for {
		lines, err := accesstest.Parse([]byte(p.logText()), "text")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, r := range accesstest.Records(lines) {
			seen[r["user"]]++
			if r["reason"] == "upgrade-drain" {
				t.Errorf("a drained session: %v", r)
			}
		}
		if seen["foo"] == 1 && seen["wsu"] == 1 && seen["tls"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("access lines per user %v, want one for foo, wsu and tls", seen)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// dialing connects to addr every 10 ms until the function it returns is
// called, which reports how many connections were tried and how many
// were refused (an upgrade must refuse none).
func dialing(addr string) func() (dials, refused int64) {
	var tried, failed atomic.Int64
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			tried.Add(1)
			if nc, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
				failed.Add(1)
			} else {
				nc.Close()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var once sync.Once
	return func() (int64, int64) {
		once.Do(func() { close(quit); <-done })
		return tried.Load(), failed.Load()
	}
}

// killAtCleanup kills pid (an upgrade's new process) when the test ends
// and waits a little for it to go.
func killAtCleanup(t *testing.T, pid int) {
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
}
