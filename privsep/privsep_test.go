package privsep

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// The test binary doubles as the worker (`TESTBIN worker --uid ...`) and
// as a process that drops privileges (PRIVSEP_TEST_DROP), so that the
// supervisor and Drop run for real.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(testWorkerMain(os.Args[2:]))
	}
	if os.Getenv("PRIVSEP_TEST_DROP") != "" {
		os.Exit(testDropMain())
	}
	os.Exit(m.Run())
}

func testWorkerMain(args []string) int {
	get := func(name string) string {
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v
			}
		}
		return ""
	}
	acct, err := ParseAccount(get("uid"), get("gid"), get("groups"))
	if err == nil {
		err = Drop(acct)
	}
	if err == nil {
		err = RunWorker(slog.New(slog.NewTextHandler(os.Stderr, nil)), nil)
	}
	if err != nil {
		os.Stderr.WriteString("worker: " + err.Error() + "\n")
		return 1
	}
	return 0
}

func testDropMain() int {
	acct := nobody()
	if err := Drop(acct); err != nil {
		os.Stdout.WriteString("drop failed: " + err.Error())
		return 1
	}
	// Every way back to root must fail.
	for name, try := range map[string]func() error{
		"setuid":    func() error { return syscall.Setuid(0) },
		"setreuid":  func() error { return syscall.Setreuid(0, 0) },
		"setgid":    func() error { return syscall.Setgid(0) },
		"setgroups": func() error { return syscall.Setgroups([]int{0}) },
	} {
		if try() == nil {
			os.Stdout.WriteString("regained privileges with " + name)
			return 1
		}
	}
	if _, err := os.ReadFile("/etc/shadow"); err == nil {
		os.Stdout.WriteString("can still read /etc/shadow")
		return 1
	}
	os.Stdout.WriteString("dropped to " + strconv.Itoa(os.Getuid()))
	return 0
}

func nobody() authn.Account {
	a, err := authn.ResolveAccount(&authn.Identity{Username: "nobody", Explicit: true})
	if err != nil {
		panic(err)
	}
	return a
}

func TestDropCannotRegainRoot(t *testing.T) {
	testenv.NeedRoot(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PRIVSEP_TEST_DROP=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dropped to "+strconv.Itoa(nobody().UID)) {
		t.Fatalf("drop: %v: %s", err, out)
	}
}

func TestDropRefusesRoot(t *testing.T) {
	if err := Drop(authn.Account{UID: 0, GID: 0}); err == nil {
		t.Fatal("Drop to root succeeded")
	}
	if _, err := ParseAccount("x", "1", ""); err == nil {
		t.Error("bad uid accepted")
	}
	a, err := ParseAccount("65534", "65534", "4,5")
	if err != nil || a.UID != 65534 || len(a.Groups) != 3 || a.Groups[0] != 65534 {
		t.Errorf("ParseAccount: %+v %v", a, err)
	}
}

// Control messages of any size, and a descriptor, cross the socketpair.
func TestChannelLargeMessageAndDescriptor(t *testing.T) {
	a, b := channelPair(t)
	r, w, _ := os.Pipe()
	defer r.Close()
	big := frame.NewDict("blob", strings.Repeat("x", 3*partSize+17))
	go func() {
		a.send(&message{Op: "session", ID: 9, Info: encodeInfo(big)}, w)
		w.Close()
	}()
	m, f, err := b.recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.Op != "session" || m.ID != 9 || f == nil {
		t.Fatalf("got %+v file %v", m, f)
	}
	d, err := decodeInfo(m.Info)
	blob, _ := d.Text("blob")
	if err != nil || len(blob) != 3*partSize+17 {
		t.Fatalf("info did not survive: %v (%d bytes)", err, len(blob))
	}
	f.Write([]byte("through the passed descriptor"))
	f.Close()
	got, _ := io.ReadAll(r)
	if string(got) != "through the passed descriptor" {
		t.Errorf("pipe read %q", got)
	}
}

func TestChannelRejectsGarbage(t *testing.T) {
	a, b := channelPair(t)
	a.c.Write([]byte{0, '{', 'x'})
	if _, _, err := b.recv(); err == nil {
		t.Error("garbage decoded")
	}
	// A message claiming endless parts is cut at maxMessage.
	go func() {
		part := bytes.Repeat([]byte{'a'}, partSize)
		for i := 0; i < maxMessage/partSize+2; i++ {
			if _, err := a.c.Write(append([]byte{1}, part...)); err != nil {
				return
			}
		}
	}()
	if _, _, err := b.recv(); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("oversized message: %v", err)
	}
}

// channelPair is both ends of a control socketpair, closed at the end.
func channelPair(t *testing.T) (*channel, *channel) {
	t.Helper()
	a, bf, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	b, err := fileChannel(bf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.close(); b.close() })
	return a, b
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A worker per account, a crash that is reaped and logged, a new worker
// for the next connection, idle retirement and a clean stop.
func TestSupervisorWorkers(t *testing.T) {
	testenv.NeedRoot(t)
	logs := &logBuf{}
	sup := &Supervisor{Exe: os.Args[0], IdleTimeout: time.Hour, Output: logs,
		Log: slog.New(slog.NewTextHandler(logs, nil)), Config: WorkerConfig{Limits: relay.Limits{ConnectTimeout: time.Second},
			SocketDirs: []string{t.TempDir()}, Hostname: "test"}}
	defer sup.Close(5 * time.Second)
	acct := nobody()
	w, err := sup.workerFor(acct)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs)
	}
	if w2, _ := sup.workerFor(acct); w2 != w {
		t.Error("second connection of the same account got another worker")
	}
	owner := procUID(t, w.pid)
	if owner != acct.UID {
		t.Errorf("worker runs as uid %d, want %d", owner, acct.UID)
	}
	// A socket dir the dropped user cannot write: no instance socket,
	// and the worker still runs (abstract listener).
	if w.socket != "" {
		t.Errorf("instance socket %s in a root-only directory", w.socket)
	}
	// A handoff to it: the client gets the server error from the worker
	// (no target listens), proving the descriptor arrived.
	client, server := socketPairFiles(t)
	wr := frame.Writer{Encoding: frame.Rencode}
	hb, _ := wr.AppendPacket(nil, frame.Packet{"hello", frame.NewDict("version", "3.1.3")})
	target, _ := route.ParseTarget("tcp://127.0.0.1:1/")
	sup.mu.Lock()
	w.sessions-- // HandOff reserves again
	sup.mu.Unlock()
	if err := sup.HandOff(&relay.Handoff{ID: 5, User: "u", Candidates: []route.Candidate{{Display: "tcp:127.0.0.1:1", Target: target}}, Hello: hb}, acct, server); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := frame.NewStreamReader(client, 0).ReadPacket()
	if err != nil || p.Type() != "disconnect" {
		t.Fatalf("client got %v %v\n%s", p, err, logs)
	}
	client.Close()

	syscall.Kill(w.pid, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for len(sup.PIDs()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if len(sup.PIDs()) != 0 || sup.Crashed.Load() != 1 || !strings.Contains(logs.String(), "worker died") {
		t.Fatalf("crash not handled: pids %v crashed %d\n%s", sup.PIDs(), sup.Crashed.Load(), logs)
	}
	w3, err := sup.workerFor(acct)
	if err != nil || w3.pid == w.pid {
		t.Fatalf("no new worker after the crash: %v", err)
	}
	// Idle retirement: the last session ends, the sweep retires it.
	sup.mu.Lock()
	w3.sessions = 1
	sup.routes[42] = routed{w: w3}
	sup.mu.Unlock()
	sup.unroute(42)
	sup.IdleTimeout = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	sup.Sweep(time.Now())
	deadline = time.Now().Add(5 * time.Second)
	for len(sup.PIDs()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if len(sup.PIDs()) != 0 || sup.Crashed.Load() != 1 {
		t.Fatalf("idle worker not retired cleanly: %v\n%s", sup.PIDs(), logs)
	}
	if syscall.Kill(w3.pid, 0) == nil {
		t.Errorf("retired worker %d still exists", w3.pid)
	}
	// Close stops whatever runs.
	w4, err := sup.workerFor(acct)
	if err != nil {
		t.Fatal(err)
	}
	sup.Close(5 * time.Second)
	if syscall.Kill(w4.pid, 0) == nil {
		t.Errorf("worker %d outlived Close", w4.pid)
	}
	if _, err := sup.workerFor(acct); err == nil {
		t.Error("a worker started after Close")
	}
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return -1
}

func socketPairFiles(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "client"), os.NewFile(uintptr(fds[1]), "server")
}

// --proxy-workers=connection: every connection gets its own worker, as
// xpra's proxy instances, and it exits when that connection ends.
func TestSupervisorPerConnection(t *testing.T) {
	testenv.NeedRoot(t)
	logs := &logBuf{}
	sup := &Supervisor{Exe: os.Args[0], PerConnection: true, IdleTimeout: time.Hour, Output: logs,
		Log: slog.New(slog.NewTextHandler(logs, nil)), Config: WorkerConfig{Limits: relay.Limits{ConnectTimeout: time.Second}, Hostname: "test"}}
	defer sup.Close(5 * time.Second)
	a, err := sup.workerFor(nobody())
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	b, err := sup.workerFor(nobody())
	if err != nil || a == b || a.pid == b.pid {
		t.Fatalf("same worker for two connections: %v", err)
	}
	sup.mu.Lock()
	sup.routes[1] = routed{w: a}
	sup.mu.Unlock()
	sup.unroute(1) // its only connection ended
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(a.pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pids := sup.PIDs(); len(pids) != 1 || pids[0] != b.pid {
		t.Errorf("after the first connection ended: workers %v, want only %d", pids, b.pid)
	}
}

// A burst of first connections of one account starts one worker, not one
// each (each is a process of about 16 MB).
func TestSupervisorBurstStartsOneWorker(t *testing.T) {
	testenv.NeedRoot(t)
	logs := &logBuf{}
	sup := &Supervisor{Exe: os.Args[0], IdleTimeout: time.Hour, Output: logs,
		Log: slog.New(slog.NewTextHandler(logs, nil)), Config: WorkerConfig{Limits: relay.Limits{ConnectTimeout: time.Second}, Hostname: "test"}}
	defer sup.Close(5 * time.Second)
	var wg sync.WaitGroup
	got := make([]*worker0, 16)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = sup.workerFor(nobody())
		}()
	}
	wg.Wait()
	for _, w := range got {
		if w == nil || w != got[0] {
			t.Fatalf("burst got different workers: %v\n%s", sup.PIDs(), logs)
		}
	}
	if n := len(sup.PIDs()); n != 1 {
		t.Errorf("%d workers for one account", n)
	}
}

// A reload's Reconfigure: the running worker keeps its session, takes no
// new one and exits after its last; the next connection gets a worker
// started with the new configuration.
func TestSupervisorReconfigure(t *testing.T) {
	testenv.NeedRoot(t)
	logs := &logBuf{}
	sup := &Supervisor{Exe: os.Args[0], IdleTimeout: time.Hour, Output: logs,
		Log: slog.New(slog.NewTextHandler(logs, nil)), Config: WorkerConfig{Limits: relay.Limits{ConnectTimeout: time.Second}, Hostname: "test"}}
	defer sup.Close(5 * time.Second)
	old, err := sup.workerFor(nobody())
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	sup.mu.Lock()
	sup.routes[1] = routed{w: old}
	sup.mu.Unlock()
	sup.Reconfigure(WorkerConfig{Limits: relay.Limits{ConnectTimeout: 2 * time.Second}, Hostname: "reloaded"})
	if syscall.Kill(old.pid, 0) != nil {
		t.Fatal("the worker holding a session exited at the reload")
	}
	fresh, err := sup.workerFor(nobody())
	if err != nil || fresh == old || fresh.pid == old.pid {
		t.Fatalf("a new connection after the reload went to the old worker: %v", err)
	}
	if pids := sup.PIDs(); len(pids) != 2 {
		t.Errorf("workers during the changeover: %v, want the old and the new", pids)
	}
	sup.mu.Lock()
	cfg := sup.Config
	sup.mu.Unlock()
	if cfg.Hostname != "reloaded" {
		t.Errorf("config after Reconfigure: %+v", cfg)
	}
	sup.unroute(1) // the old worker's last session ended
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(old.pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(old.pid, 0) == nil {
		t.Fatalf("the old worker outlived its last session\n%s", logs)
	}
	if pids := sup.PIDs(); len(pids) != 1 || pids[0] != fresh.pid {
		t.Errorf("after the changeover: workers %v, want only %d", pids, fresh.pid)
	}
	if sup.Crashed.Load() != 0 {
		t.Errorf("a retired worker counted as crashed\n%s", logs)
	}
}
