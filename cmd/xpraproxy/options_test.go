package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestParseProxyArgs(t *testing.T) {
	o, err := parseProxyArgs([]string{":100",
		"--bind-tcp=0.0.0.0:14501,auth=sqlite:filename=./xpra-auth.sdb",
		"--bind-tcp", "127.0.0.1:14502,auth=sqlite,filename=x.sdb,password_query=SELECT 1",
		"--bind-unix=/tmp/p.sock", "--tcp-auth=allow", "--auth=none",
		"--socket-dir=/tmp", "--socket-dirs=/a:/b,/c", "--daemon=no", "--log-file=/tmp/l",
		"--idle-timeout=30", "--max-session-buffer=8M", "--mdns=no"})
	if err != nil {
		t.Fatal(err)
	}
	if o.display != ":100" || len(o.binds) != 3 || o.socketDir != "/tmp" || strings.Join(o.socketDirs, " ") != "/a /b /c" ||
		o.daemon || o.logFile != "/tmp/l" || o.lim.IdleTimeout != 30*time.Second || o.lim.MaxSessionBuffer != 8<<20 || len(o.ignored) != 1 {
		t.Fatalf("%+v", o)
	}
	b := o.binds[0]
	if b.network != "tcp" || b.address != "0.0.0.0:14501" || len(b.auth) != 1 || b.auth[0].Name != "sqlite" || b.auth[0].Options["filename"] != "./xpra-auth.sdb" {
		t.Errorf("xpra 4 bind syntax: %+v", b)
	}
	b = o.binds[1]
	if b.auth[0].Options["filename"] != "x.sdb" || b.auth[0].Options["password_query"] != "SELECT 1" {
		t.Errorf("comma options after auth=: %+v", b.auth[0])
	}
	if o.binds[2].network != "unix" || o.tcpAuth[0].Name != "allow" || o.auth[0].Name != "none" {
		t.Errorf("%+v", o)
	}
	for _, bad := range [][]string{
		{"--nosuch=1"},
		{"--bind-tcp=0.0.0.0"},
		{"--bind-tcp=0.0.0.0:99999"},
		{"--bind-tcp=h:1,foo=bar"},
		{"--daemon=perhaps"},
		{"--idle-timeout=soon"},
		{"--tcp-auth"},
		{"stray"},
		{":abc"},
	} {
		if _, err := parseProxyArgs(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := parseProxyArgs([]string{"--nosuch"}); err == nil || !strings.Contains(err.Error(), "unknown option --nosuch") {
		t.Errorf("unknown option message: %v", err)
	}
}

func TestSqliteCommand(t *testing.T) {
	db := filepath.Join(t.TempDir(), "u.sdb")
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := sqliteMain(append([]string{db}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	if c, out := run("create"); c != 0 {
		t.Fatal(out)
	}
	if c, _ := run("create"); c == 0 {
		t.Error("second create succeeded")
	}
	run("add", "foo", "bar")
	run("add", "moo", "cow", "nobody", "nogroup", "tcp://h:1/", "", "compression=0")
	if c, out := run("authenticate", "moo", "cow"); c != 0 || !strings.Contains(out, "success") || !strings.Contains(out, "tcp://h:1/") {
		t.Errorf("authenticate: %d %s", c, out)
	}
	if c, out := run("authenticate", "moo", "bad"); c == 0 || !strings.Contains(out, "authentication failed") {
		t.Errorf("bad password: %d %s", c, out)
	}
	_, out := run("list")
	if !strings.Contains(out, "moo") || !strings.Contains(out, strconv.Itoa(os.Getuid())) {
		t.Errorf("list (uid defaults to the caller's): %s", out)
	}
	run("remove", "moo")
	if _, out := run("list"); strings.Contains(out, "moo") {
		t.Errorf("remove: %s", out)
	}
	if c, out := run("add", "only-user"); c == 0 || !strings.Contains(out, "usage") {
		t.Errorf("bad arguments: %d %s", c, out)
	}
}

// --daemon=yes returns at once and leaves a proxy serving in the
// background, logging to the log file.
func TestDaemonMode(t *testing.T) {
	port := freePort()
	logf := filepath.Join(env.dir, fmt.Sprintf("daemon-%d.log", port))
	sock := filepath.Join(env.dir, fmt.Sprintf("dsock-%d", port))
	os.MkdirAll(sock, 0o777)
	os.Chmod(sock, 0o777)
	out, err := asUser(env.bin, "proxy", freeDisplay(), fmt.Sprintf("--bind-tcp=127.0.0.1:%d", port), "--tcp-auth=none",
		"--socket-dir="+sock, "--daemon=yes", "--log-file="+logf).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	m := regexp.MustCompile(`pid (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no pid in %q", out)
	}
	pid, _ := strconv.Atoi(string(m[1]))
	defer syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatal("daemon not listening")
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; syscall.Kill(pid, 0) == nil; i++ {
		if i > 100 {
			t.Fatal("daemon did not stop on SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(logf)
	if !strings.Contains(string(b), "xpraproxy ready") || !strings.Contains(string(b), "stopping") {
		t.Errorf("daemon log:\n%s", b)
	}
}

// The embedded default creates its database and says how to add a user.
func TestEmbeddedDefault(t *testing.T) {
	cfg := filepath.Join(env.dir, "cfghome")
	os.MkdirAll(cfg, 0o777)
	os.Chmod(cfg, 0o777)
	cmd := asUser(env.bin, "proxy", "--socket-dir="+cfg)
	cmd.Env = append(cmd.Env, "XDG_CONFIG_HOME="+cfg)
	var (
		raw bytes.Buffer
		mu  sync.Mutex
	)
	cmd.Stdout = syncBuf{&mu, &raw}
	cmd.Stderr = cmd.Stdout
	text := func() string { mu.Lock(); defer mu.Unlock(); return raw.String() }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	db := filepath.Join(cfg, "xpraproxy", "users.sdb")
	for i := 0; ; i++ {
		if _, err := os.Stat(db); err == nil && strings.Contains(text(), "xpraproxy ready") {
			break
		}
		if i > 100 {
			t.Fatalf("no database or not ready:\n%s", text())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := text(); !strings.Contains(out, "add USER PASSWORD") || !strings.Contains(out, "127.0.0.1:14500") {
		t.Errorf("no hint:\n%s", out)
	}
}
