package sshd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
)

// proxyWithSSH runs a loop server whose tcp port serves SSH, logins
// checked by a multifile module with users (lines "user|pass|uid|gid|displays").
func proxyWithSSH(t *testing.T, cfg relay.Config, srv *Server, users ...string) (string, *loop.Server) {
	t.Helper()
	return proxyOn(t, "tcp", cfg, srv, users...)
}

// noSSH marks a port without SSH (--ssh-upgrade=no).
var noSSH = &Server{}

// proxyOn is proxyWithSSH on a listener of kind ("tcp", "ssh").
func proxyOn(t *testing.T, kind string, cfg relay.Config, srv *Server, users ...string) (string, *loop.Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	os.WriteFile(path, []byte(strings.Join(users, "\n")+"\n"), 0o600)
	m, err := authn.New(authn.Spec{Name: "multifile", Options: map[string]string{"filename": path}}, authn.Env{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Modules = []authn.Module{m}
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if cfg.LoginTimeout == 0 {
		cfg.LoginTimeout = 10 * time.Second
	}
	cfg.ChallengeTimeout, cfg.ConnectTimeout, cfg.MaxPacketSize = 10*time.Second, 5*time.Second, 16<<20
	if srv.Signers == nil {
		srv.Signers = testKeys(t)
	}
	srv.Modules, srv.Log = cfg.Modules, cfg.Log
	if cfg.Throttle != nil {
		srv.Throttle = cfg.Throttle
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort()))
	l := loop.Listener{Network: "tcp", Address: addr, Config: &cfg, SSH: srv, Kind: kind}
	if srv == noSSH {
		l.SSH = nil
	}
	ls := loop.New([]loop.Listener{l}, loop.Options{Loops: 2})
	errc := make(chan error, 1)
	go func() { errc <- ls.Run() }()
	select {
	case <-ls.Ready():
	case err := <-errc:
		t.Fatalf("proxy: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("proxy did not start")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ls.Stop(ctx)
		<-errc
	})
	return addr, ls
}

var keysOnce []ssh.Signer

// testKeys are host keys generated once per test binary.
func testKeys(t *testing.T) []ssh.Signer {
	t.Helper()
	if keysOnce == nil {
		k, err := HostKeys(nil, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		keysOnce = k
	}
	return keysOnce
}

func dialSSH(t *testing.T, addr, user, password string) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.Password(password)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
}

// run execs cmd on a new session channel: its stdout, stderr and exit status.
func run(t *testing.T, c *ssh.Client, cmd string) (string, string, int) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("session for %q: %v", cmd, err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	err = s.Run(cmd)
	code := 0
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitStatus()
	} else if err != nil {
		t.Fatalf("%q: %v", cmd, err)
	}
	return out.String(), errb.String(), code
}

// channelConn is an SSH channel as the xpratest client's connection.
type channelConn struct {
	ssh.Channel
	net.Conn // addresses; deadlines are not the channel's
}

func (c channelConn) Read(p []byte) (int, error)       { return c.Channel.Read(p) }
func (c channelConn) Write(p []byte) (int, error)      { return c.Channel.Write(p) }
func (c channelConn) Close() error                     { return c.Channel.Close() }
func (c channelConn) SetReadDeadline(time.Time) error  { return nil }
func (c channelConn) SetDeadline(time.Time) error      { return nil }
func (c channelConn) SetWriteDeadline(time.Time) error { return nil }

// proxyChannel opens the xpra channel as xpra's clients do.
func proxyChannel(t *testing.T, c *ssh.Client, cmd string) *xpratest.Client {
	t.Helper()
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{cmd}))
	if err != nil || !ok {
		t.Fatalf("exec %q: %v %v", cmd, ok, err)
	}
	return xpratest.NewClient(channelConn{Channel: ch}, nil)
}

// An SSH client logs in with the row's password, probes for xpra as
// xpra's clients do, and its `xpra _proxy` channel reaches the row's
// server without an xpra challenge; the server sees the SSH user.
func TestSSHSession(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	addr, ls := proxyWithSSH(t, relay.Config{}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	c, err := dialSSH(t, addr, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		cmd, out, err string
		code          int
	}{
		{"which xpra", "xpra\r\n", "", 0},
		{"type $XDG_RUNTIME_DIR/xpra/run-xpra", "xpra\r\n", "", 0},
		{"command", "\r\n", "", 0},
		{"command -v xpra", "xpra\r\n", "", 0},
		{"echo %OS%", "\r\n", "", 0},
		{"echo $OSTYPE", "linux\r\n", "", 0},
		{"which bash", "", "not found", 1},
		{"rm -rf /", "", "only `xpra _proxy` runs here", 1},
		{"xpra _proxy_start --start=xterm", "", "not supported", 1},
	} {
		out, errText, code := run(t, c, tc.cmd)
		if out != tc.out || !strings.Contains(errText, tc.err) || code != tc.code {
			t.Errorf("%q: stdout %q stderr %q status %d; want %q, %q, %d", tc.cmd, out, errText, code, tc.out, tc.err, tc.code)
		}
	}
	xc := proxyChannel(t, c, `"xpra" _proxy "--socket-dir=/run/user/1000/xpra"`)
	if err := xc.Send(frame.Packet{"hello", xpratest.Hello("someone-else")}); err != nil {
		t.Fatal(err)
	}
	p, err := xc.Recv(10 * time.Second)
	if err != nil || p.Type() != "hello" {
		t.Fatalf("after the hello: %v %v", p, err)
	}
	if err := xc.Ping(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := ls.Sessions(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	// One xpra session per connection.
	if _, _, err := c.OpenChannel("session", nil); err == nil {
		t.Error("a second session channel was accepted")
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for ls.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := ls.Sessions(); n != 0 {
		t.Errorf("%d sessions after the client left", n)
	}
}

// What an xpra proxy does not offer is refused: forwarding, a shell, a
// pty, data before the exec request.
func TestSSHRefusals(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	addr, _ := proxyWithSSH(t, relay.Config{}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	c, err := dialSSH(t, addr, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.OpenChannel("direct-tcpip", ssh.Marshal(struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}{"127.0.0.1", 22, "127.0.0.1", 1})); err == nil {
		t.Error("port forwarding accepted")
	}
	if ok, _, _ := c.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"127.0.0.1", 0})); ok {
		t.Error("remote forwarding accepted")
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Error("pty accepted")
	}
	if err := s.Shell(); err == nil {
		t.Error("shell accepted")
	}
	if err := s.RequestSubsystem("sftp"); err == nil {
		t.Error("sftp accepted")
	}
	s.Close()
}

// A client that never sends its exec request (or never finishes its
// key exchange) is closed at the login deadline.
func TestSSHLoginDeadline(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	addr, ls := proxyWithSSH(t, relay.Config{Limits: relay.Limits{LoginTimeout: time.Second}}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	c, err := dialSSH(t, addr, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("a client without an exec request outlived the login timeout")
	}
	// Data and never an exec request: the same.
	c, err = dialSSH(t, addr, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	ch.Write(bytes.Repeat([]byte("P garbage"), 10000))
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("a client that sent data without an exec request outlived the login timeout")
	}
	// A banner, then nothing.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte("SSH-2.0-stall\r\n"))
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Errorf("a stalled key exchange was not closed: %v", err)
	}
	// The count drops once the connection's goroutine has returned,
	// just after the socket closed.
	deadline := time.Now().Add(3 * time.Second)
	for statInt(ls.Stats(), "connections") != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := statInt(ls.Stats(), "connections"); n != 0 {
		t.Errorf("%d connections still counted", n)
	}
}

func statInt(d frame.Dict, key string) int64 {
	v, _ := d.Int(key)
	return v
}

// Generated host keys are kept: the same keys after a restart.
func TestHostKeysKept(t *testing.T) {
	dir := t.TempDir()
	a, err := HostKeys(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := HostKeys(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 || len(b) != 2 {
		t.Fatalf("%d and %d keys", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(a[i].PublicKey().Marshal(), b[i].PublicKey().Marshal()) {
			t.Errorf("key %d (%s) changed", i, a[i].PublicKey().Type())
		}
	}
	for _, n := range []string{"ssh_host_ed25519_key", "ssh_host_rsa_key"} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", n, fi, err)
		}
	}
	// The operator's files instead.
	c, err := HostKeys([]string{filepath.Join(dir, "ssh_host_ed25519_key")}, "")
	if err != nil || len(c) != 1 || !bytes.Equal(c[0].PublicKey().Marshal(), a[0].PublicKey().Marshal()) {
		t.Errorf("from a file: %v %v", c, err)
	}
	if _, err := HostKeys([]string{filepath.Join(dir, "missing")}, dir); err == nil {
		t.Error("a missing key file was accepted")
	}
}

// An SSH-only port (--bind-ssh) speaks first, as SSH servers do, and
// serves SSH to anyone; a tcp port without SSH answers a banner as xpra
// does without ssh-upgrade.
func TestSSHOnlyPortAndNoUpgrade(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	addr, _ := proxyOn(t, "ssh", relay.Config{}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 17)
	if _, err := io.ReadFull(nc, b); err != nil || string(b) != "SSH-2.0-xpraproxy" {
		t.Errorf("the SSH port's first words: %q %v", b, err)
	}
	nc.Close()
	c, err := dialSSH(t, addr, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	xc := proxyChannel(t, c, "xpra _proxy")
	xc.Send(frame.Packet{"hello", xpratest.Hello("foo")})
	if p, err := xc.Recv(10 * time.Second); err != nil || p.Type() != "hello" {
		t.Errorf("over --bind-ssh: %v %v", p, err)
	}
	c.Close()

	plain, _ := proxyOn(t, "tcp", relay.Config{}, noSSH, "foo|bar|||tcp://"+fs.Addr()+"/")
	nc, err = net.Dial("tcp", plain)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte("SSH-2.0-client\r\n"))
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	out, _ := io.ReadAll(nc)
	if !strings.Contains(string(out), "invalid packet format, SSH packet") {
		t.Errorf("a port without SSH answered %q", out)
	}
}

// OpenSSH's client sends its stdin right after the exec request, before
// the reply: those bytes are the xpra stream's first.
func TestSSHPipelinedExec(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	addr, _ := proxyWithSSH(t, relay.Config{}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	for range 5 {
		c, err := dialSSH(t, addr, "foo", "bar")
		if err != nil {
			t.Fatal(err)
		}
		ch, reqs, err := c.OpenChannel("session", nil)
		if err != nil {
			t.Fatal(err)
		}
		go ssh.DiscardRequests(reqs)
		if _, err := ch.SendRequest("exec", false, ssh.Marshal(struct{ Command string }{`sh -c 'if type "xpra" > /dev/null 2>&1; then xpra _proxy; fi'`})); err != nil {
			t.Fatal(err)
		}
		xc := xpratest.NewClient(channelConn{Channel: ch}, nil)
		if err := xc.Send(frame.Packet{"hello", xpratest.Hello("foo")}); err != nil {
			t.Fatal(err)
		}
		if p, err := xc.Recv(10 * time.Second); err != nil || p.Type() != "hello" {
			t.Fatalf("pipelined: %v %v", p, err)
		}
		c.Close()
	}
}
