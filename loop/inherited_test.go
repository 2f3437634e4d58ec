package loop

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Listeners opened by someone else (systemd's socket activation) are served
// as they are: a tcp one sniffs xpra and TLS like a bound one, a unix one
// speaks xpra, neither is bound again, and the unix socket's path stays
// after Stop (its owner hands it to the next instance).
func TestInheritedListeners(t *testing.T) {
	fs := startFakeServer(t, "")
	tlsCfg, err := selfsigned.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Limits: relay.Limits{LoginTimeout: 5 * time.Second, ChallengeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, MaxPacketSize: 1 << 20}}
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "activated")
	unixLn, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// The path is the socket's maker's, not the server's.
	unixLn.(*net.UnixListener).SetUnlinkOnClose(true)
	os.Chmod(path, 0o640)
	srv := New([]Listener{
		{Network: "tcp", Address: tcpLn.Addr().String(), Kind: "tcp", Config: &cfg, TLS: tlsCfg, Inherited: tcpLn},
		{Network: "unix", Address: path, Kind: "unix", Config: &cfg, Inherited: unixLn},
	}, Options{})
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatalf("run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not ready")
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Stop(ctx)
			<-errc
		}
	}
	t.Cleanup(stop)

	login := func(name string, c net.Conn, rencode bool) {
		t.Helper()
		t.Cleanup(func() { c.Close() })
		tc := newTestClient(c, nil)
		if rencode {
			tc.Writer = frame.Writer{Encoding: frame.Rencode} // as TestOnePortTransports' ssl client
		}
		if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
			t.Fatalf("%s: login: %s", name, p)
		}
		tc.send(frame.Packet{"ping", 7, 0, "x"})
		if p := tc.recv(t); p.Type() != "ping_echo" {
			t.Fatalf("%s: ping: %s", name, p)
		}
	}
	c, err := net.Dial("tcp", tcpLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	login("tcp", c, false)
	tc, err := tls.Dial("tcp", tcpLn.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS on the inherited tcp socket: %v", err)
	}
	login("ssl", tc, true)
	u, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	login("unix", u, false)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("the inherited socket's mode was changed: %v %v", fi.Mode(), err)
	}

	stop()
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("the inherited unix socket's path was removed: %v", err)
	}
	if c, err := net.DialTimeout("tcp", tcpLn.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the inherited tcp listener still accepts after Stop")
	}
}
