package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

// workerProc is one `xpraproxy worker` child of the proxy, as ps shows it.
type workerProc struct {
	pid  int
	user string
}

// workers lists the proxy's worker processes with their owners (ps).
func workers(t *testing.T, p *proxy) []workerProc {
	t.Helper()
	out, err := exec.Command("ps", "-o", "pid=,user=,args=", "--ppid", strconv.Itoa(p.cmd.Process.Pid)).Output()
	if err != nil && len(out) == 0 {
		return nil
	}
	var ws []workerProc
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[3] == "worker" {
			pid, _ := strconv.Atoi(f[0])
			ws = append(ws, workerProc{pid, f[1]})
		}
	}
	return ws
}

func workerOf(ws []workerProc, user string) workerProc {
	for _, w := range ws {
		if w.user == user {
			return w
		}
	}
	return workerProc{}
}

// connOwners returns the pids owning TCP connections to port (ss -tnp).
func connOwners(t *testing.T, port int) []int {
	t.Helper()
	out, err := exec.Command("ss", "-Htnp", "state", "established", "dst", fmt.Sprintf("127.0.0.1:%d", port)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	var pids []int
	for _, m := range regexp.MustCompile(`pid=(\d+)`).FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[1])
		pids = append(pids, n)
	}
	return pids
}

// proxyInstance finds the proxy-ID of user's connection in `xpra info`
// output of the proxy's own socket.
func proxyInstance(t *testing.T, info, user string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^sessions\.(proxy-\d+)\.user=` + regexp.QuoteMeta(user) + `$`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("no connection of %s in the proxy's info:\n%s", user, info)
	}
	return m[1]
}

func eventually(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// As root (CI), the proxy relays every connection in a worker running as
// the target account: the seed's sqlite example with uid/gid nobody, a
// second account in a second worker, a killed worker ending only its own
// sessions, `xpraproxy stop :proxy-ID`, and the real xpra list/info/stop
// against the proxy.
func TestRootPrivilegeSeparation(t *testing.T) {
	testenv.NeedRoot(t)
	forEachGen(t, testRootPrivilegeSeparation)
}

func testRootPrivilegeSeparation(t *testing.T, g *generation) {
	// sessionC is killed by an earlier test; D is this test's own.
	a, b, c := g.srv(t, "sessionA"), g.srv(t, "sessionB"), g.srv(t, "sessionD")
	// The seed's example rows (nobody/nobody: Debian has no group nobody,
	// which falls back to nogroup as in xpra), and joe running as the
	// test user.
	db := sqliteDB(t,
		[]string{"foo", "bar", "nobody", "nobody", target(a)},
		[]string{"moo", "cow", "nobody", "nobody", target(b), "", "compression=0"},
		[]string{"joe", "pw", testUser, testUser, target(c)},
		[]string{"admin", "pw", "root", "root", target(b)})
	os.Chmod(db, 0o600)
	metricsPort := freePort()
	cert, key := writeCert(t)
	p := startProxyAs(t, true, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		fmt.Sprintf("--metrics=127.0.0.1:%d", metricsPort), "--ssl-cert="+cert, "--ssl-key="+key)
	url := func(user, pw string) string { return fmt.Sprintf("tcp://%s:%s@127.0.0.1:%d/", user, pw, p.port) }
	title := func(s *xpraServer, user string) string {
		return fmt.Sprintf("%s on tcp://%s@127.0.0.1:%d/", s.name, user, p.port)
	}

	foo := g.attach(t, url("foo", "bar"))
	// moo comes over wss://: TLS ends in the main process, the WebSocket
	// framing moves to the worker with the connection.
	moo := g.attach(t, fmt.Sprintf("wss://moo:cow@127.0.0.1:%d/", p.port), "--ssl-server-verify-mode=none")
	joe := g.attach(t, url("joe", "pw"))
	pixelsMatch(t, a, foo, title(a, "foo"))
	pixelsMatch(t, b, moo, fmt.Sprintf("%s on wss://moo@127.0.0.1:%d/", b.name, p.port))
	pixelsMatch(t, c, joe, title(c, "joe"))

	// Two accounts, two workers; the main process holds no backend.
	ws := workers(t, p)
	nobody, joeW := workerOf(ws, "nobody"), workerOf(ws, testUser)
	if len(ws) != 2 || nobody.pid == 0 || joeW.pid == 0 {
		t.Fatalf("want one worker as nobody and one as %s, ps shows %+v", testUser, ws)
	}
	for s, want := range map[*xpraServer][]int{a: {nobody.pid}, b: {nobody.pid}, c: {joeW.pid}} {
		owners := connOwners(t, s.port)
		slices.Sort(owners)
		slices.Sort(want)
		if !slices.Equal(owners, want) {
			t.Errorf("connections to %s owned by %v, want the workers %v", s.name, owners, want)
		}
	}
	if status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", nobody.pid)); !regexp.MustCompile(`(?m)^Uid:\s+65534\s+65534\s+65534\s+65534$`).Match(status) {
		t.Errorf("worker uids are not all nobody's:\n%s", status)
	}

	// A root account is refused, as xpra does.
	admin := g.attach(t, url("admin", "pw"))
	if out := admin.exited(t, 30*time.Second); !strings.Contains(out, "cannot run proxy instances as root") {
		t.Errorf("root target: client said:\n%s", tail([]byte(out), 1500))
	}

	// The real xpra list and info against the proxy's own socket.
	out, err := g.command(false, "list", "--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "LIVE session at "+p.display) ||
		!strings.Contains(string(out), fmt.Sprintf("proxy-worker-%d", nobody.pid)) {
		t.Errorf("xpra list: %v\n%s", err, out)
	}
	info, err := g.command(false, "info", p.display, "--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir).CombinedOutput()
	if err != nil {
		t.Fatalf("xpra info %s: %v\n%s", p.display, err, info)
	}
	fooID := proxyInstance(t, string(info), "foo")
	for _, want := range []string{
		"sessions." + fooID + ".pid=" + strconv.Itoa(nobody.pid),
		"sessions." + fooID + ".uid=65534",
		"sessions." + fooID + ".target=" + target(a),
		"workers." + strconv.Itoa(joeW.pid) + ".sessions=1",
	} {
		if !strings.Contains(string(info), want) {
			t.Errorf("xpra info lacks %q:\n%s", want, info)
		}
	}
	// One connection's info names both peers, its traffic and worker.
	one, err := exec.Command(env.bin, "info", ":"+fooID, "--socket-dir="+p.sockDir).CombinedOutput()
	if err != nil {
		t.Fatalf("xpraproxy info :%s: %v\n%s", fooID, err, one)
	}
	for _, re := range []string{`(?m)^client\.peer=tcp 127\.0\.0\.1:\d+$`, `(?m)^server\.target=` + regexp.QuoteMeta(target(a)) + `$`,
		`(?m)^server-to-client\.bytes=[1-9]\d*$`, `(?m)^client-to-server\.packets=[1-9]\d*$`, `(?m)^pid=` + strconv.Itoa(nobody.pid) + `$`} {
		if !regexp.MustCompile(re).Match(one) {
			t.Errorf("xpraproxy info :%s does not match %s:\n%s", fooID, re, one)
		}
	}

	// Metrics count the workers' sessions and traffic.
	time.Sleep(1200 * time.Millisecond) // a full sweep counts live traffic
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, re := range []string{`(?m)^xpraproxy_workers 2$`, `(?m)^xpraproxy_sessions 3$`,
		`(?m)^xpraproxy_handshakes_total\{result="relayed"\} 3$`, `(?m)^xpraproxy_handshakes_total\{result="no-session"\} 1$`,
		`(?m)^xpraproxy_relayed_bytes_total\{direction="server_to_client"\} [1-9]`} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("metrics do not match %s:\n%s", re, body)
		}
	}

	// Killing joe's worker ends joe's session only; joe can come back.
	syscall.Kill(joeW.pid, syscall.SIGKILL)
	joe.exited(t, 30*time.Second)
	if !foo.running() || !moo.running() {
		t.Fatal("killing one worker ended another account's session")
	}
	eventually(t, "the worker's death in the log", 5*time.Second, func() bool {
		return strings.Contains(p.logText(), "worker died; its connections are lost")
	})
	joe2 := g.attach(t, url("joe", "pw"))
	pixelsMatch(t, c, joe2, title(c, "joe"))
	if w := workerOf(workers(t, p), testUser); w.pid == 0 || w.pid == joeW.pid {
		t.Errorf("joe's new connection should start a new worker, ps shows %+v", workers(t, p))
	}

	// xpraproxy stop :proxy-ID ends one connection; the other stays.
	out, err = exec.Command(env.bin, "stop", ":"+fooID, "--socket-dir="+p.sockDir).CombinedOutput()
	if err != nil {
		t.Fatalf("xpraproxy stop :%s: %v\n%s", fooID, err, out)
	}
	if msg := foo.exited(t, 20*time.Second); !strings.Contains(msg, "proxy instance stopped by request") {
		t.Errorf("stopped client said:\n%s", tail([]byte(msg), 1500))
	}
	if !moo.running() {
		t.Fatal("stopping one proxy instance ended another")
	}
	pixelsMatch(t, b, moo, fmt.Sprintf("%s on wss://moo@127.0.0.1:%d/", b.name, p.port))

	// The real xpra stop stops the proxy, its workers and their clients.
	pids := []int{p.cmd.Process.Pid}
	for _, w := range workers(t, p) {
		pids = append(pids, w.pid)
	}
	out, err = g.command(false, "stop", p.display, "--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir).CombinedOutput()
	if err != nil {
		t.Errorf("xpra stop %s: %v\n%s", p.display, err, out)
	}
	if msg := moo.exited(t, 20*time.Second); !strings.Contains(msg, "server shutdown") {
		t.Errorf("client of a stopped proxy said:\n%s", tail([]byte(msg), 1500))
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("proxy exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not exit after xpra stop")
	}
	eventually(t, "no orphan workers", 10*time.Second, func() bool {
		for _, pid := range pids[1:] {
			if syscall.Kill(pid, 0) == nil {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z ") {
					return false
				}
			}
		}
		return true
	})
	if log := p.logText(); strings.Contains(log, "=bar") || strings.Contains(log, "cow") || strings.Contains(log, "=pw") {
		t.Errorf("a password reached the log:\n%s", log)
	}
}

// Every session option reaches a root proxy's worker as the main process
// has it (one road: relay.Limits), and so does the GC target: each set
// to a value that is not its default, read back from the proxy's info
// and from the worker's own.
func TestOptionsReachWorkers(t *testing.T) {
	testenv.NeedRoot(t)
	a, b := gen31.srv(t, "sessionA"), gen31.srv(t, "sessionB")
	cert, key := writeCert(t)
	db := sqliteDB(t, []string{"foo", "bar", testUser, testUser, target(a)}, []string{"moo", "cow", testUser, testUser, target(b)})
	p := startProxyAs(t, true, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		"--login-timeout=17", "--connect-timeout=13", "--idle-timeout=3600", "--max-packet-size=20M",
		"--max-session-buffer=40M", "--proxy-ping=7", "--max-login-packet-size=300K", "--max-target-connects=9",
		"--proxy-start-sessions=yes", "--max-started-sessions=3", "--proxy-start-as-proxy-user=yes",
		"--proxy-start-commands=xterm,xclock", "--proxy-start-env=LANG", "--proxy-start-xpra=/usr/bin/xpra,/opt/xpra6",
		"--gc-percent=37", "--ssl-cert="+cert, "--ssl-key="+key)
	c := attach(t, fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", p.port))
	pixelsMatch(t, a, c, fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port))
	// A second client over wss://: what the main process decided for its
	// link (TLS terminated there, WebSocket framing, the masking rule for
	// a client without an Origin) is what the worker's session says.
	// (Another server: a second client of sessionA would take it over.)
	cw := attach(t, fmt.Sprintf("wss://moo:cow@127.0.0.1:%d/", p.port), "--ssl-server-verify-mode=none")
	pixelsMatch(t, b, cw, fmt.Sprintf("sessionB on wss://moo@127.0.0.1:%d/", p.port))
	limits := func(args ...string) map[string]string {
		out, err := exec.Command(env.bin, append([]string{"info"}, append(args, "--socket-dir="+p.sockDir)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("xpraproxy info %v: %v\n%s", args, err, out)
		}
		m := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && (strings.HasPrefix(k, "limits.") || k == "gc-percent") {
				m[k] = v
			}
		}
		return m
	}
	main := limits(p.display)
	w := workerOf(workers(t, p), testUser)
	if w.pid == 0 {
		t.Fatal("no worker")
	}
	worker := limits(fmt.Sprintf(":proxy-worker-%d", w.pid))
	want := map[string]string{"limits.login_timeout": "17000000000", "limits.connect_timeout": "13000000000",
		"limits.idle_timeout": "3600000000000", "limits.max_packet_size": "20971520", "limits.max_session_buffer": "41943040",
		"limits.ping_interval": "7000000000", "limits.login_packet_size": "307200", "limits.max_target_connects": "9",
		"limits.start_sessions": "true", "limits.max_started_sessions": "3", "limits.start_as_proxy_user": "true",
		"limits.start_commands": "xterm,xclock", "limits.start_env": "LANG", "limits.start_xpra": "/usr/bin/xpra,/opt/xpra6",
		// Not a session limit: the worker runs with the proxy's GC target.
		"gc-percent": "37"}
	if len(main) < len(want) {
		t.Fatalf("the proxy's info has %d limits: %v", len(main), main)
	}
	for k, v := range main {
		if worker[k] != v {
			t.Errorf("%s: proxy %q, worker %q", k, v, worker[k])
		}
	}
	for k, v := range want {
		if main[k] != v {
			t.Errorf("%s = %q, want %q (the option did not take)", k, main[k], v)
		}
	}
	// The per-connection policies, from the worker's list of its sessions.
	out, err := exec.Command(env.bin, "info", fmt.Sprintf(":proxy-worker-%d", w.pid), "--socket-dir="+p.sockDir).CombinedOutput()
	if err != nil {
		t.Fatalf("xpraproxy info of the worker: %v\n%s", err, out)
	}
	links := map[string]map[string]string{} // session -> client.* facts
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, "=")
		name, fact, isClient := strings.Cut(strings.TrimPrefix(k, "sessions."), ".client.")
		if !ok || !strings.HasPrefix(k, "sessions.") || !isClient {
			continue
		}
		if links[name] == nil {
			links[name] = map[string]string{}
		}
		links[name][fact] = v
	}
	var plain, ws map[string]string
	for _, l := range links {
		if l["transport"] == "ws" {
			ws = l
		} else {
			plain = l
		}
	}
	if len(links) != 2 || plain == nil || ws == nil {
		t.Fatalf("the worker's sessions' links: %v\n%s", links, out)
	}
	for fact, v := range map[string]string{"tls": "true", "websocket-require-mask": "false", "generation": "3.1"} {
		if !strings.EqualFold(ws[fact], v) {
			t.Errorf("the wss client's session in the worker: %s = %q, want %q (%v)", fact, ws[fact], v, ws)
		}
	}
	for fact, v := range map[string]string{"generation": "3.1"} {
		if !strings.EqualFold(plain[fact], v) {
			t.Errorf("the tcp client's session in the worker: %s = %q, want %q (%v)", fact, plain[fact], v, plain)
		}
	}
	if plain["transport"] != "" || strings.EqualFold(plain["tls"], "true") {
		t.Errorf("the tcp client's session in the worker claims a transport: %v", plain)
	}
}
