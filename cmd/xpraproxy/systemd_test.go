package main

import (
	"fmt"
	"math/rand/v2"
	"net"
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
	"golang.org/x/sys/unix"
)

// The systemd protocol, with systemd's own tool: systemd-socket-activate
// opens a tcp and a unix socket, execs xpraproxy with them on its first
// connection (LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES, as a .socket unit
// does), and the proxy reports on a NOTIFY_SOCKET this test listens on, as
// systemd's manager would.

// notifySocket is the service manager's end of NOTIFY_SOCKET: every
// datagram the proxy sends arrives on the channel.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(env.dir, fmt.Sprintf("notify-%d", rand.IntN(1e9)))
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o777) // the proxy may run as the test user
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close(); os.Remove(path) })
	return path, msgs
}

// nextState waits for a datagram that contains want, and returns it.
func nextState(t *testing.T, msgs <-chan string, want string, timeout time.Duration) string {
	t.Helper()
	return nextMatch(t, msgs, regexp.MustCompile(regexp.QuoteMeta(want)), timeout)
}

// nextMatch waits for a datagram that matches re, and returns it.
func nextMatch(t *testing.T, msgs <-chan string, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	last := ""
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed before %s", re)
			}
			if re.MatchString(m) {
				return m
			}
			last = m
		case <-deadline:
			t.Fatalf("nothing matching %s on the notify socket within %v; last: %q", re, timeout, last)
		}
	}
}

// activatedProxy runs systemd-socket-activate -l 127.0.0.1:PORT -l SOCK
// with the FileDescriptorNames fdnames, as root or the test user, with
// NOTIFY_SOCKET and WATCHDOG_USEC (1 s) passed on, and xpraproxy's args
// (PORT and ASOCK replaced) after its own; it returns once the proxy has
// been started by a first connection, which it returns (open: the proxy
// counts it until it is closed).
func activatedProxy(t *testing.T, root bool, notify, fdnames string, args ...string) (*proxy, string, net.Conn) {
	t.Helper()
	p := &proxy{host: "127.0.0.1", port: freePort(), log: filepath.Join(env.dir, fmt.Sprintf("proxy-%d.log", rand.IntN(1e9)))}
	p.display = freeDisplay()
	p.sockDir = filepath.Join(env.dir, fmt.Sprintf("psock-%d", p.port))
	os.MkdirAll(p.sockDir, 0o777)
	os.Chmod(p.sockDir, 0o1777)
	sock := filepath.Join(env.dir, fmt.Sprintf("activated-%d.sock", p.port))
	full := []string{"-l", fmt.Sprintf("127.0.0.1:%d", p.port), "-l", sock, "--fdname=" + fdnames,
		"-E", "NOTIFY_SOCKET", "-E", "WATCHDOG_USEC",
		env.bin, "proxy", p.display, "--socket-dir=" + p.sockDir, "--log-file=" + p.log}
	for _, a := range args {
		full = append(full, strings.ReplaceAll(strings.ReplaceAll(a, "PORT", strconv.Itoa(p.port)), "ASOCK", sock))
	}
	const activate = "/usr/bin/systemd-socket-activate"
	if root {
		p.cmd = exec.Command(activate, full...)
		p.cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root"}
	} else {
		p.cmd = asUser(activate, full...)
	}
	p.cmd.Env = append(p.cmd.Env, "NOTIFY_SOCKET="+notify, "WATCHDOG_USEC=1000000")
	p.cmd.Dir = env.dir
	stderr, err := os.Create(p.log + ".stderr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stderr.Close() })
	p.cmd.Stdout, p.cmd.Stderr = stderr, stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	env.mu.Lock()
	env.procs = append(env.procs, p.cmd)
	env.mu.Unlock()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		os.Remove(sock)
		if t.Failed() {
			b, _ := os.ReadFile(p.log + ".stderr")
			t.Logf("systemd-socket-activate:\n%s\nproxy log:\n%s", tail(b, 2000), tail([]byte(p.logText()), 4000))
		}
	})
	// systemd-socket-activate starts the proxy on the first connection.
	var trigger net.Conn
	for i := 0; i < 100 && trigger == nil; i++ {
		trigger, _ = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port))
		time.Sleep(50 * time.Millisecond)
	}
	if trigger == nil {
		t.Fatal("systemd-socket-activate does not listen")
	}
	t.Cleanup(func() { trigger.Close() })
	return p, sock, trigger
}

// Socket activation of a tcp and a unix socket, readiness, status,
// watchdog and stopping, with real 3.1.3 clients reaching a session
// through each inherited socket; the same as root, where workers relay.
func TestSocketActivation(t *testing.T) {
	t.Run("user", func(t *testing.T) { testSocketActivation(t, false) })
	t.Run("root", func(t *testing.T) {
		testenv.NeedRoot(t)
		testSocketActivation(t, true)
	})
}

func testSocketActivation(t *testing.T, root bool) {
	a, b := srv(t, "sessionA"), srv(t, "sessionB")
	db := sqliteDB(t,
		[]string{"foo", "bar", "nobody", "nobody", target(a)},
		[]string{"moo", "cow", "nobody", "nobody", target(b)})
	os.Chmod(db, 0o644) // read by the test user's proxy too
	notify, msgs := notifySocket(t)
	// The tcp socket has no --bind-tcp: it gets --tcp-auth. The unix one
	// is the --bind-unix's address: it takes that bind's auth, and is not
	// bound again (it could not be: systemd-socket-activate holds it).
	p, sock, trigger := activatedProxy(t, root, notify, "xpraproxy.socket:xpraproxy.socket",
		"--tcp-auth=sqlite,filename="+db, "--bind-unix=ASOCK,auth=sqlite:filename="+db)

	ready := nextState(t, msgs, "READY=1", 20*time.Second)
	trigger.Close()
	// systemd-socket-activate execs the proxy: the main pid is its own.
	if !strings.Contains(ready, "MAINPID="+strconv.Itoa(p.cmd.Process.Pid)) || !strings.Contains(ready, "STATUS=sessions=") {
		t.Errorf("READY=1 datagram without this MAINPID or a STATUS: %q", ready)
	}
	// WATCHDOG_USEC=1000000: a WATCHDOG=1 every half second.
	start := time.Now()
	nextState(t, msgs, "WATCHDOG=1", 2*time.Second)
	nextState(t, msgs, "WATCHDOG=1", 2*time.Second)
	nextState(t, msgs, "WATCHDOG=1", 2*time.Second)
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("three watchdog pings took %v", d)
	}
	log := p.logText()
	for _, re := range []string{
		`listener=tcp://127\.0\.0\.1:` + strconv.Itoa(p.port) + ` auth="?sqlite,filename=.*inherited=true`,
		`listener=unix://` + regexp.QuoteMeta(sock) + ` auth="?sqlite,filename=.*inherited=true`,
		`socket activation: serving the sockets the service manager passed" sockets=2`,
	} {
		if !regexp.MustCompile(re).MatchString(log) {
			t.Errorf("proxy log does not match %s:\n%s", re, log)
		}
	}

	foo := attach(t, fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", p.port))
	pw := filepath.Join(env.dir, fmt.Sprintf("cow-%d.txt", rand.IntN(1e9)))
	os.WriteFile(pw, []byte("cow"), 0o600)
	moo := attach(t, "socket://"+sock, "--username=moo", "--password-file="+pw)
	pixelsMatch(t, a, foo, fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port))
	pixelsMatch(t, b, moo, b.name)
	// The status is refreshed every few seconds.
	want := `STATUS=sessions=2 connections=\d+ logging-in=0$`
	var ws []workerProc
	if root {
		want = `STATUS=sessions=2 connections=\d+ logging-in=0 workers=1$`
		ws = workers(t, p)
		if len(ws) != 1 || ws[0].user != "nobody" {
			t.Errorf("want one worker as nobody, ps shows %+v", ws)
		}
		// No worker holds a listening socket: the inherited ones stay
		// in the main process.
		for _, w := range ws {
			if l := listeningSockets(t, w.pid); len(l) > 0 {
				t.Errorf("worker %d holds listening sockets %v", w.pid, l)
			}
		}
	}
	nextMatch(t, msgs, regexp.MustCompile(want), 15*time.Second)

	p.cmd.Process.Signal(syscall.SIGTERM)
	nextState(t, msgs, "STOPPING=1", 10*time.Second)
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("proxy exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("proxy still running 15 s after SIGTERM")
	}
	for _, c := range []*client{foo, moo} {
		if out := c.exited(t, 20*time.Second); !strings.Contains(out, "shutdown") {
			t.Errorf("client not told of the shutdown:\n%s", tail([]byte(out), 1500))
		}
	}
	// The unix socket's path is its owner's (systemd's): the proxy leaves it.
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("the inherited unix socket was removed: %v", err)
	}
	for _, w := range ws {
		eventually(t, fmt.Sprintf("worker %d to exit", w.pid), 10*time.Second, func() bool {
			// Gone, or a zombie nobody reaped yet.
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", w.pid))
			return err != nil || strings.Contains(string(st), ") Z ")
		})
	}
}

// listeningSockets lists the tcp sockets in LISTEN state that process pid
// has open (its fds against /proc/net/tcp{,6}).
func listeningSockets(t *testing.T, pid int) []string {
	t.Helper()
	listening := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(line); len(fs) > 9 && fs[3] == "0A" {
				listening["socket:["+fs[9]+"]"] = true
			}
		}
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && listening[l] {
			out = append(out, fd.Name()+"→"+l)
		}
	}
	return out
}

// Which bind each inherited socket becomes: the --bind-* of its address
// (wildcards and /var/run-style symlinks matching), else its
// FileDescriptorName's kind, else its socket type's; a datagram socket is
// closed and noted; a --bind-* no socket matches is bound as usual.
func TestAdoptSockets(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "run"), 0o755)
	os.Symlink(filepath.Join(dir, "run"), filepath.Join(dir, "varrun"))
	listen := func(network, addr string) *os.File {
		t.Helper()
		var f *os.File
		var err error
		switch network {
		case "unixgram":
			var c *net.UnixConn
			if c, err = net.ListenUnixgram(network, &net.UnixAddr{Name: addr, Net: network}); err == nil {
				f, err = c.File()
				c.Close()
			}
		default:
			var ln net.Listener
			if ln, err = net.Listen(network, addr); err == nil {
				f, err = ln.(interface{ File() (*os.File, error) }).File()
				ln.Close()
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	wild := listen("tcp", "[::]:0")
	port := func(f *os.File) string {
		ln, err := net.FileListener(f)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	}
	wildPort := port(wild)
	named := listen("tcp", "127.0.0.1:0")
	namedPort := port(named)
	files := []*os.File{
		wild,
		named,
		listen("unix", filepath.Join(dir, "run", "system")),
		listen("unix", filepath.Join(dir, "other")),
		listen("unixgram", filepath.Join(dir, "dgram")),
	}
	names := []string{"xpraproxy.socket", "ws", "unix", "ws", "dgram"}
	for i, f := range files {
		// A second *os.File on the same descriptor would close it twice
		// (the first one's finalizer), and the second close could hit a
		// descriptor another test opened meanwhile (a parallel test's
		// process handle: "bad file descriptor" from Process.Signal).
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		files[i] = os.NewFile(uintptr(fd), names[i])
	}
	o, err := parseProxyArgsEnv([]string{"--bind-ssl=*:" + wildPort + ",auth=allow",
		"--bind-unix=" + filepath.Join(dir, "varrun", "system") + ",auth=none",
		"--bind-tcp=127.0.0.1:1", "--ssl-cert=x"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	act, err := adoptSockets(o, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, b := range o.binds {
			if b.ln != nil {
				b.ln.Close()
			}
		}
	})
	type got struct{ network, address, kind, auth string }
	var binds []got
	for _, b := range o.binds {
		auth := ""
		if len(b.auth) > 0 {
			auth = b.auth[0].Name
		}
		if b.ln == nil {
			b.address += " (bound)"
		}
		binds = append(binds, got{b.network, b.address, b.kind, auth})
	}
	want := []got{
		{"tcp", "[::]:" + wildPort, "ssl", "allow"},
		{"unix", filepath.Join(dir, "run", "system"), "unix", "none"},
		{"tcp", "127.0.0.1:1 (bound)", "tcp", ""},
		{"tcp", "127.0.0.1:" + namedPort, "ws", ""},
		{"unix", filepath.Join(dir, "other"), "unix", ""},
	}
	if fmt.Sprint(binds) != fmt.Sprint(want) {
		t.Errorf("binds:\n got %v\nwant %v", binds, want)
	}
	notes := strings.Join(act.notes, "\n")
	if act.n != 4 || !strings.Contains(notes, `"dgram" is a unixgram socket; closed`) ||
		!strings.Contains(notes, "FileDescriptorName=ws does not fit it") {
		t.Errorf("%d sockets, notes:\n%s", act.n, notes)
	}
	// Without activation nothing changes, and no notifier is made.
	o2, _ := parseProxyArgsEnv([]string{"--bind-tcp=127.0.0.1:1"}, func(string) string { return "" })
	if act, err := adoptSockets(o2, nil); err != nil || act.n != 0 || len(o2.binds) != 1 || underServiceManager(act) && os.Getenv("NOTIFY_SOCKET") == "" {
		t.Errorf("no activation: %+v %v %v", act, err, o2.binds)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if n := newNotifier(nil); n != nil {
		t.Error("a notifier without NOTIFY_SOCKET")
	}
	var n *notifier // what proxyMain has then: every state is a no-op
	n.Ready("x")
	n.Reloading()
	n.Stopping()
	n.Status("x")
}

// `make install-files` puts the binary, the units and the example files in
// place without overwriting an operator's configuration, and
// `systemd-analyze verify` accepts the units. verify checks that
// ExecStart's binary exists: the install goes to PREFIX=<temp>/usr, so the
// installed unit's ExecStart names the installed copy of this build
// (the Makefile rewrites /usr/bin/xpraproxy to $(PREFIX)/bin/xpraproxy).
func TestUnitFiles(t *testing.T) {
	stage := t.TempDir()
	units := filepath.Join(stage, "units")
	install := func() {
		t.Helper()
		out, err := exec.Command("make", "-C", "../..", "install-files", "BIN="+env.bin, "PREFIX="+filepath.Join(stage, "usr"),
			"SYSCONFDIR="+filepath.Join(stage, "etc"), "SYSTEMDUNITDIR="+units).CombinedOutput()
		if err != nil {
			t.Fatalf("make install-files: %v\n%s", err, out)
		}
	}
	install()
	conf := filepath.Join(stage, "etc", "xpraproxy", "xpraproxy.conf")
	os.WriteFile(conf, []byte("# the operator's\n"), 0o644)
	install()
	if b, _ := os.ReadFile(conf); string(b) != "# the operator's\n" {
		t.Errorf("a second install overwrote the configuration: %q", b)
	}
	for _, f := range []string{"usr/bin/xpraproxy", "units/xpraproxy.service", "units/xpraproxy.socket", "etc/default/xpraproxy"} {
		if _, err := os.Stat(filepath.Join(stage, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	svc, _ := os.ReadFile(filepath.Join(units, "xpraproxy.service"))
	if !strings.Contains(string(svc), "ExecStart="+filepath.Join(stage, "usr", "bin", "xpraproxy")+" proxy :14500 --daemon=no") {
		t.Errorf("installed ExecStart does not name the installed binary:\n%s", svc)
	}
	// verify prints a unit's problems (an unknown key, a bad value) and
	// still exits 0: its output must be empty too.
	out, err := exec.Command("systemd-analyze", "verify", "--man=no",
		filepath.Join(units, "xpraproxy.socket"), filepath.Join(units, "xpraproxy.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// Every key of the example configuration is an option of the table.
	known := map[string]bool{}
	for _, o := range proxyOptionTable() {
		for _, n := range o.names {
			known[n] = true
		}
	}
	example, err := os.ReadFile("../../packaging/xpraproxy.conf")
	if err != nil {
		t.Fatal(err)
	}
	keys := 0
	for _, line := range strings.Split(string(example), "\n") {
		line = strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(line), "#!"))
		k, _, ok := strings.Cut(line, " = ")
		if !ok || strings.Contains(k, " ") {
			continue // prose
		}
		keys++
		if !known[k] {
			t.Errorf("packaging/xpraproxy.conf: %q is no option", k)
		}
	}
	if keys < 4 {
		t.Errorf("only %d keys found in the example configuration", keys)
	}
}

// FileDescriptorName sets an unbound socket's kind: "ws" makes the tcp
// socket HTTP/WebSocket only (a real 3.1.3 `xpra info ws://` is answered,
// raw xpra is not), and the unix socket, named by no --bind-unix, gets
// --unix-auth.
func TestSocketActivationNames(t *testing.T) {
	a := srv(t, "sessionA")
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nobody", target(a)})
	os.Chmod(db, 0o644)
	notify, msgs := notifySocket(t)
	p, sock, trigger := activatedProxy(t, false, notify, "ws:unix", "--tcp-auth=sqlite,filename="+db, "--unix-auth=sqlite,filename="+db)
	nextState(t, msgs, "READY=1", 20*time.Second)
	trigger.Close()
	info := func(url string, extra ...string) string {
		out, _ := gen31.command(false, append([]string{"info", url}, extra...)...).CombinedOutput()
		return string(out)
	}
	if out := info(fmt.Sprintf("ws://foo:bar@127.0.0.1:%d/", p.port)); !strings.Contains(out, "mode=proxy") {
		t.Errorf("xpra info ws:// on the socket named ws:\n%s", tail([]byte(out), 1500))
	}
	if out := info(fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", p.port)); strings.Contains(out, "mode=proxy") {
		t.Errorf("raw xpra answered on the socket named ws:\n%s", tail([]byte(out), 1500))
	}
	pw := filepath.Join(env.dir, fmt.Sprintf("bar-%d.txt", rand.IntN(1e9)))
	os.WriteFile(pw, []byte("bar"), 0o600)
	if out := info("socket://"+sock, "--username=foo", "--password-file="+pw); !strings.Contains(out, "mode=proxy") {
		t.Errorf("xpra info over the unix socket with --unix-auth:\n%s", tail([]byte(out), 1500))
	}
	os.WriteFile(pw, []byte("wrong"), 0o600)
	if out := info("socket://"+sock, "--username=foo", "--password-file="+pw); strings.Contains(out, "mode=proxy") {
		t.Errorf("the unix socket let a wrong password in:\n%s", tail([]byte(out), 1500))
	}
	if log := p.logText(); !regexp.MustCompile(`listener=ws://127\.0\.0\.1:\d+ auth="?sqlite.*inherited=true`).MatchString(log) {
		t.Errorf("the tcp socket was not served as ws:\n%s", log)
	}
}

// An upgrade under socket activation (docs/upgrade.md): the successor
// takes the inherited sockets, tcp and unix, and the relaying session;
// the old process hands the service manager MAINPID= the successor and
// exits; new clients reach the new process on both sockets, and the
// client attached before goes on, pixel for pixel.
func TestSocketActivationUpgrade(t *testing.T) {
	a, b := srv(t, "sessionA"), srv(t, "sessionB")
	db := sqliteDB(t,
		[]string{"foo", "bar", "nobody", "nobody", target(a)},
		[]string{"moo", "cow", "nobody", "nobody", target(b)})
	os.Chmod(db, 0o644)
	notify, msgs := notifySocket(t)
	p, sock, trigger := activatedProxy(t, false, notify, "xpraproxy.socket:xpraproxy.socket",
		"--tcp-auth=sqlite,filename="+db, "--bind-unix=ASOCK,auth=sqlite:filename="+db, "--upgrade-drain-timeout=3")
	nextState(t, msgs, "READY=1", 20*time.Second)
	trigger.Close()
	old := p.cmd.Process.Pid
	foo := attach(t, fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", p.port))
	pixelsMatch(t, a, foo, fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port))

	if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`MAINPID=(\d+)\nSTATUS=upgraded`).FindStringSubmatch(
		nextMatch(t, msgs, regexp.MustCompile(`MAINPID=\d+\nSTATUS=upgraded`), 30*time.Second))
	successor, _ := strconv.Atoi(m[1])
	if successor == old || successor == 0 {
		t.Fatalf("MAINPID after the upgrade is %d (the old process is %d)", successor, old)
	}
	t.Cleanup(func() {
		syscall.Kill(successor, syscall.SIGKILL)
		for i := 0; i < 50 && syscall.Kill(successor, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	pw := filepath.Join(env.dir, fmt.Sprintf("cow-%d.txt", rand.IntN(1e9)))
	os.WriteFile(pw, []byte("cow"), 0o600)
	moo := attach(t, "socket://"+sock, "--username=moo", "--password-file="+pw)
	pixelsMatch(t, b, moo, b.name)
	info, _ := exec.Command(env.bin, "info", p.display, "--socket-dir="+p.sockDir).CombinedOutput()
	if !strings.Contains(string(info), fmt.Sprintf("server.pid=%d", successor)) {
		t.Errorf("after the upgrade the proxy's socket is not the successor's:\n%s", tail(info, 1000))
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the old process still runs with its session handed over")
	}
	if !foo.running() {
		t.Fatalf("the client attached before the upgrade exited:\n%s", tail([]byte(foo.text()), 1500))
	}
	pixelsMatch(t, a, foo, fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port))
	if strings.Contains(foo.text(), "connection lost") || strings.Contains(foo.text(), upgradeReason) {
		t.Errorf("the client attached before the upgrade noticed it:\n%s", tail([]byte(foo.text()), 1500))
	}
	foo.stop()
	if !moo.running() {
		t.Fatalf("the successor's client exited with the old process:\n%s", tail([]byte(moo.text()), 1500))
	}
	moo.stop()
}
