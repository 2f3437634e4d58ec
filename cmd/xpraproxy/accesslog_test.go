package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/xpraproxy/xpraproxy/internal/accesstest"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// A real client of each generation attached through the proxy to a real
// server, then exiting: its session's access line names the user, the
// transport, both generations, traffic each way and a client-ended code.
// As the test user (text) and as root (JSON), where the session relays in
// a worker whose record the main process writes.
func TestAccessLogRealClient(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		for _, mode := range []struct {
			name   string
			root   bool
			format string
		}{{"user", false, "text"}, {"root", true, "json"}} {
			t.Run(mode.name, func(t *testing.T) {
				if mode.root && os.Geteuid() != 0 {
					t.Skip("root mode needs root")
				}
				a := g.srv(t, "sessionA")
				db := sqliteDB(t, []string{"foo", "pw-s3cret", "nobody", "nobody", target(a)})
				if mode.root {
					os.Chmod(db, 0o600)
				}
				p := startProxyAs(t, mode.root, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--log-format="+mode.format)
				c := g.attach(t, fmt.Sprintf("tcp://foo:pw-s3cret@127.0.0.1:%d/", p.port))
				pixelsMatch(t, a, c, fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port))
				c.cmd.Process.Signal(syscall.SIGTERM)
				c.exited(t, 30*time.Second)
				var rec accesstest.Line
				eventually(t, "the session's access line", 20*time.Second, func() bool {
					lines, err := accesstest.Parse([]byte(p.logText()), mode.format)
					if err != nil {
						t.Fatalf("the %s log does not parse: %v", mode.format, err)
					}
					// The harness's probe of the port is a session of its
					// own (no hello: code CH, no user).
					var recs []accesstest.Line
					for _, r := range accesstest.Records(lines) {
						if r["user"] == "foo" {
							recs = append(recs, r)
						}
					}
					if len(recs) > 1 {
						t.Fatalf("%d access lines for one session: %v", len(recs), recs)
					}
					if len(recs) == 1 {
						rec = recs[0]
					}
					return rec != nil
				})
				t.Logf("access line: %v", rec)
				// One line: neither a second from the worker's end nor one
				// from the main process's side of a handoff.
				time.Sleep(1500 * time.Millisecond)
				lines, _ := accesstest.Parse([]byte(p.logText()), mode.format)
				n := 0
				for _, r := range accesstest.Records(lines) {
					if r["session"] == rec["session"] {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%d access lines for session %s", n, rec["session"])
				}
				for k, want := range map[string]string{"user": "foo", "transport": "tcp", "client_gen": g.name,
					"server_gen": g.name, "bridged": "false", "target": target(a), "reason": "client-gone", "code": "CR"} {
					if rec[k] != want {
						t.Errorf("%s = %q, want %q", k, rec[k], want)
					}
				}
				for _, k := range []string{"c2s_bytes", "c2s_packets", "s2c_bytes", "s2c_packets"} {
					if n, err := strconv.ParseInt(rec[k], 10, 64); err != nil || n <= 0 {
						t.Errorf("%s = %q, want > 0", k, rec[k])
					}
				}
				if s2c, _ := strconv.ParseInt(rec["s2c_bytes"], 10, 64); s2c < 10_000 {
					t.Errorf("s2c_bytes %d: the window's pixels went that way", s2c)
				}
				if strings.Contains(p.logText(), "pw-s3cret") {
					t.Error("the password is in the log")
				}
				url := fmt.Sprintf("tcp://foo:pw-s3cret@127.0.0.1:%d/", p.port)
				title := fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port)
				if mode.root {
					// xpraproxy stop :proxy-ID of a session a worker relays.
					c2 := g.attach(t, url)
					pixelsMatch(t, a, c2, title)
					info, err := g.command(false, "info", p.display, "--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir).CombinedOutput()
					if err != nil {
						t.Fatalf("xpra info: %v\n%s", err, info)
					}
					id := proxyInstance(t, string(info), "foo")
					if out, err := exec.Command(env.bin, "stop", ":"+id, "--socket-dir="+p.sockDir).CombinedOutput(); err != nil {
						t.Fatalf("xpraproxy stop :%s: %v\n%s", id, err, out)
					}
					r := waitRecord(t, p, mode.format, "stopped")
					checkLine(t, r, map[string]string{"code": "LR", "user": "foo", "session": strings.TrimPrefix(id, "proxy-")})
					// A worker that dies with a session: the main process
					// writes what it knows.
					c3 := g.attach(t, url)
					pixelsMatch(t, a, c3, title)
					w := workerOf(workers(t, p), "nobody")
					syscall.Kill(w.pid, syscall.SIGKILL)
					c3.exited(t, 30*time.Second)
					r = waitRecord(t, p, mode.format, "internal")
					checkLine(t, r, map[string]string{"code": "PR", "user": "foo", "transport": "tcp"})
				}
				// Stopping the proxy: each live session's line says so,
				// written by the worker's side as root.
				c4 := g.attach(t, url)
				pixelsMatch(t, a, c4, title)
				p.cmd.Process.Signal(syscall.SIGTERM)
				r := waitRecord(t, p, mode.format, "shutdown")
				checkLine(t, r, map[string]string{"code": "LR", "user": "foo", "client_gen": g.name, "text": "server shutdown: proxy server stopped"})
			})
		}
	})
}

// waitRecord waits for the proxy's access line with reason.
func waitRecord(t *testing.T, p *proxy, format, reason string) accesstest.Line {
	t.Helper()
	var rec accesstest.Line
	eventually(t, "a "+reason+" access line", 20*time.Second, func() bool {
		lines, err := accesstest.Parse([]byte(p.logText()), format)
		if err != nil {
			t.Fatalf("the %s log does not parse: %v", format, err)
		}
		for _, r := range accesstest.Records(lines) {
			if r["reason"] == reason {
				rec = r
			}
		}
		return rec != nil
	})
	return rec
}

// checkLine asserts fields of an access line.
func checkLine(t *testing.T, got accesstest.Line, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (line %v)", k, got[k], v, got)
		}
	}
}

// journaldSocket is where journald listens and go-systemd sends.
const journaldSocket = "/run/systemd/journal/socket"

// journalSocket listens where journald would, for the test's length; it
// skips the test where a journald runs (its socket exists) or without
// root.
func journalSocket(t *testing.T) *net.UnixConn {
	t.Helper()
	if _, err := os.Stat(journaldSocket); err == nil {
		t.Skip("a journald runs here: this test would write into it")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to listen on journald's socket path")
	}
	made := []string{}
	for _, d := range []string{"/run/systemd", "/run/systemd/journal"} {
		if _, err := os.Stat(d); err != nil {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			made = append(made, d)
		}
	}
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: journaldSocket, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		os.Remove(journaldSocket)
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i])
		}
	})
	return ln
}

// The proxy itself, its stderr the journal's stream: a session's end is
// a journal entry with its fields, the rest of the log stays on stderr.
// The proxy runs as root, so the record comes from a worker.
func TestAccessLogJournalProxy(t *testing.T) {
	ln := journalSocket(t)
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	users := filepath.Join(env.dir, fmt.Sprintf("journal-users-%d", freePort()))
	os.WriteFile(users, []byte("foo|pw-s3cret|||tcp://"+fs.Addr()+"/\n"), 0o600)
	stderr, err := os.Create(filepath.Join(env.dir, fmt.Sprintf("journal-stderr-%d", freePort())))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	port := freePort()
	sockDir := t.TempDir()
	cmd := exec.Command(env.bin, "proxy", freeDisplay(), "--socket-dir="+sockDir,
		fmt.Sprintf("--bind-tcp=127.0.0.1:%d,auth=multifile:filename=%s", port, users))
	cmd.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var c *xpratest.Client
	eventually(t, "the proxy's port", 10*time.Second, func() bool {
		c, err = xpratest.Dial(addr, "")
		return err == nil
	})
	defer c.Close()
	if p, err := c.Login("foo", "pw-s3cret", xpratest.Hello("foo")); err != nil || p.Type() != "hello" {
		t.Fatalf("login: %v %v", p, err)
	}
	if err := c.Ping(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.Close()
	ln.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<16)
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatalf("no journal entry: %v", err)
	}
	fields, err := parseJournalEntry(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"XPRAPROXY_USER": "foo", "XPRAPROXY_CODE": "CR", "XPRAPROXY_REASON": "client-gone",
		"XPRAPROXY_TRANSPORT": "tcp", "XPRAPROXY_CLIENT_GEN": "3.1", "XPRAPROXY_TARGET": "tcp://" + fs.Addr() + "/"} {
		if fields[k] != want {
			t.Errorf("%s = %q, want %q", k, fields[k], want)
		}
	}
	if b, _ := strconv.ParseInt(fields["XPRAPROXY_S2C_BYTES"], 10, 64); b <= 0 {
		t.Errorf("XPRAPROXY_S2C_BYTES %q", fields["XPRAPROXY_S2C_BYTES"])
	}
	out, _ := os.ReadFile(stderr.Name())
	lines, err := accesstest.Parse(out, "text")
	if err != nil {
		t.Fatal(err)
	}
	if recs := accesstest.Records(lines); len(recs) != 0 || !strings.Contains(string(out), "msg=relaying") {
		t.Errorf("stderr should have the other lines and no access line:\n%s", out)
	}
	// As root (the test needs it) a worker relayed the session: its record
	// reached the journal through the main process.
	if !strings.Contains(string(out), "connection handed to worker") {
		t.Errorf("no worker relayed the session:\n%s", out)
	}
	if strings.Contains(string(out)+string(buf[:n]), "pw-s3cret") {
		t.Error("the password reached the log")
	}
}

// With stderr the journal's stream (JOURNAL_STREAM, as systemd sets it),
// an access record goes to journald as one entry with structured fields,
// through go-systemd's journal package and journald's native protocol,
// read here from the socket where journald listens (this machine runs no
// journald; the test owns the socket only where none exists). Any other
// line, and a record once the journal is gone, stays a text line.
func TestAccessLogJournal(t *testing.T) {
	ln := journalSocket(t)
	var st syscall.Stat_t
	if err := syscall.Fstat(int(os.Stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	h, err := newLogHandler("text", os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	jh, ok := h.(*journalHandler)
	if !ok {
		t.Fatalf("stderr is the journal stream, the handler is a %T", h)
	}
	rec := relay.AccessRecord{ID: 7, Client: "127.0.0.1:4000", User: "alice", Transport: "wss", ClientGen: "6.x",
		ServerGen: "3.1", Bridged: true, Target: "tcp://u@10.0.0.1:14500/", Start: time.Now().Add(-time.Minute),
		Duration: time.Minute, C2S: relay.TrafficTotals{Bytes: 100, Packets: 3}, S2C: relay.TrafficTotals{Bytes: 5000, Packets: 40},
		Reason: relay.CloseTooSlow, Phase: relay.PhaseRelay, Text: "connection too slow: nothing read for 60s"}
	// The proxy's logger has attributes of its own (a worker's pid).
	var text bytes.Buffer
	jh.next = slog.NewTextHandler(&text, nil)
	log := slog.New(jh).With("worker", 42)
	rec.Log(log)
	log.Info("an ordinary line")
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1<<16)
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatalf("nothing reached the journal's socket: %v", err)
	}
	fields, err := parseJournalEntry(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"PRIORITY": "6", "XPRAPROXY_USER": "alice", "XPRAPROXY_CODE": "PR",
		"XPRAPROXY_REASON": "too-slow", "XPRAPROXY_TRANSPORT": "wss", "XPRAPROXY_CLIENT_GEN": "6.x",
		"XPRAPROXY_SERVER_GEN": "3.1", "XPRAPROXY_BRIDGED": "true", "XPRAPROXY_S2C_BYTES": "5000",
		"XPRAPROXY_C2S_PACKETS": "3", "XPRAPROXY_SESSION": "7", "XPRAPROXY_WORKER": "42",
		"XPRAPROXY_TEXT": "connection too slow: nothing read for 60s", "XPRAPROXY_TARGET": "tcp://u@10.0.0.1:14500/"} {
		if fields[k] != want {
			t.Errorf("%s = %q, want %q", k, fields[k], want)
		}
	}
	if m := fields["MESSAGE"]; !strings.HasPrefix(m, relay.AccessMsg+" ") || !strings.Contains(m, "code=PR") {
		t.Errorf("MESSAGE %q", m)
	}
	lines, err := accesstest.Parse(text.Bytes(), "text")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0]["msg"] != "an ordinary line" {
		t.Errorf("the stream got %q, want the ordinary line only", text.String())
	}
	// journald gone: the record is a text line instead.
	ln.Close()
	os.Remove(journaldSocket)
	text.Reset()
	rec.Log(log)
	lines, err = accesstest.Parse(text.Bytes(), "text")
	if err != nil {
		t.Fatal(err)
	}
	if recs := accesstest.Records(lines); len(recs) != 1 || recs[0]["code"] != "PR" || recs[0]["user"] != "alice" {
		t.Errorf("without journald the record should be a text line, got %q", text.String())
	}
	if journal.Enabled() {
		t.Error("journal.Enabled with its socket gone")
	}
}

// parseJournalEntry reads journald's native protocol: KEY=value lines,
// or KEY, a newline, a little-endian 64-bit length and the value's bytes
// (a value with a newline) (systemd.io/JOURNAL_NATIVE_PROTOCOL).
func parseJournalEntry(b []byte) (map[string]string, error) {
	out := map[string]string{}
	r := bufio.NewReader(bytes.NewReader(b))
	for {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			return out, nil
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			continue
		}
		var n uint64
		if err := binary.Read(r, binary.LittleEndian, &n); err != nil || n > uint64(len(b)) {
			return nil, fmt.Errorf("journal entry: field %q: bad length", line)
		}
		v := make([]byte, n+1)
		if _, err := r.Read(v); err != nil {
			return nil, err
		}
		out[string(line)] = string(v[:n])
	}
}
