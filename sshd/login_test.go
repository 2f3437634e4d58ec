package sshd

// Logins over SSH: passwords, paramiko's deferred "none", keyboard-
// interactive, keys, refusals and the login throttle.

import (
	"crypto/ed25519"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// A wrong password and an unknown user are refused alike.
func TestSSHRefusedAlike(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	addr, ls := proxyWithSSH(t, relay.Config{}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	_, wrong := dialSSH(t, addr, "foo", "wrong")
	_, unknown := dialSSH(t, addr, "nobody-here", "bar")
	if wrong == nil || unknown == nil {
		t.Fatalf("logged in: %v / %v", wrong, unknown)
	}
	if wrong.Error() != unknown.Error() {
		t.Errorf("refusals differ:\n%v\n%v", wrong, unknown)
	}
	if n := ls.Counters().Handshakes["ssh-auth-failed"]; n != 2 {
		t.Errorf("%d failed SSH logins counted, want 2", n)
	}
}

// The login throttle counts SSH failures: past its burst the source is
// refused before its password is checked, with a banner saying so.
func TestSSHThrottle(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	th := relay.NewThrottle(slog.New(slog.NewTextHandler(io.Discard, nil)))
	addr, _ := proxyWithSSH(t, relay.Config{Throttle: th}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	for range 6 {
		dialSSH(t, addr, "foo", "wrong")
	}
	var banner string
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "foo", Auth: []ssh.AuthMethod{ssh.Password("bar")},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
		BannerCallback: func(m string) error { banner += m; return nil }})
	if err == nil {
		c.Close()
		t.Fatal("the right password got in during the lockout")
	}
	if !strings.Contains(banner, "too many failed logins") {
		t.Errorf("banner %q", banner)
	}
}

// paramiko's clients get one authentication request (deferNone): their
// "none" is let in and the xpra challenge logs them in with the same
// modules; a wrong password there ends the session as any xpra login.
func TestSSHParamikoDeferred(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	addr, _ := proxyWithSSH(t, relay.Config{}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	for _, tc := range []struct {
		password, want string
	}{{"bar", "hello"}, {"wrong", "disconnect"}} {
		c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "foo", ClientVersion: "SSH-2.0-paramiko_2.12.0",
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		xc := proxyChannel(t, c, "xpra _proxy")
		p, err := xc.Login("foo", tc.password, nil)
		if err != nil || p.Type() != tc.want {
			t.Errorf("password %q: %v %v, want %s", tc.password, p, err, tc.want)
		}
		c.Close()
	}
	// Anyone else's "none" is refused: they go on to a password or a key.
	if _, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "foo", HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second}); err == nil {
		t.Error("a client without credentials got in")
	}
}

// keyboard-interactive with one question, the password (6.x's paramiko
// client with "none" off); a client that has a password and asks for a
// challenge before its full hello (3.1) gets xpra's fake one.
func TestSSHKeyboardInteractiveAndFakeChallenge(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	addr, _ := proxyWithSSH(t, relay.Config{}, &Server{}, "foo|bar|||tcp://"+fs.Addr()+"/")
	answer := func(password string) ssh.KeyboardInteractiveChallenge {
		return func(_, _ string, questions []string, _ []bool) ([]string, error) {
			if len(questions) != 1 {
				t.Errorf("questions %q", questions)
			}
			return []string{password}, nil
		}
	}
	if _, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "foo", Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(answer("wrong"))},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second}); err == nil {
		t.Error("a wrong keyboard-interactive answer got in")
	}
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "foo", Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(answer("bar"))},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	xc := proxyChannel(t, c, "xpra _proxy")
	hello := xpratest.Hello("foo")
	hello.Set("challenge", true)
	if err := xc.Send(frame.Packet{"hello", hello}); err != nil {
		t.Fatal(err)
	}
	ch, err := xc.Recv(10 * time.Second)
	if err != nil || ch.Type() != "challenge" {
		t.Fatalf("no fake challenge: %v %v", ch, err)
	}
	// Any answer: it is not checked.
	full, err := xpratest.AnswerChallenge(xpratest.Hello("foo"), ch, "not-checked")
	if err != nil {
		t.Fatal(err)
	}
	if err := xc.Send(frame.Packet{"hello", full}); err != nil {
		t.Fatal(err)
	}
	if p, err := xc.Recv(10 * time.Second); err != nil || p.Type() != "hello" {
		t.Fatalf("after the fake challenge: %v %v", p, err)
	}
}

// A key from the user's authorized_keys file logs the user in, and the
// user's row (found without a password) decides the target; another
// key, a key with options, and a key for a user no module knows are
// refused.
func TestSSHKeyLogin(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	dir := t.TempDir()
	newKey := func() ssh.Signer {
		_, priv, _ := ed25519.GenerateKey(nil)
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good, other, withOpts, ghost := newKey(), newKey(), newKey(), newKey()
	write := func(user string, lines ...string) {
		os.WriteFile(filepath.Join(dir, "keys-"+user), []byte(strings.Join(lines, "")), 0o600)
	}
	write("foo", "# foo's keys\n", string(ssh.MarshalAuthorizedKey(good.PublicKey())),
		`from="10.0.0.1" `+string(ssh.MarshalAuthorizedKey(withOpts.PublicKey())))
	write("ghost", string(ssh.MarshalAuthorizedKey(ghost.PublicKey())))
	addr, _ := proxyWithSSH(t, relay.Config{}, &Server{AuthorizedKeys: filepath.Join(dir, "keys-%u")},
		"foo|bar|||tcp://"+fs.Addr()+"/")
	dial := func(user string, k ssh.Signer) (*ssh.Client, error) {
		return ssh.Dial("tcp", addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(k)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
	}
	for _, tc := range []struct {
		user string
		key  ssh.Signer
	}{{"foo", other}, {"foo", withOpts}, {"ghost", ghost}, {"../foo", good}} {
		if c, err := dial(tc.user, tc.key); err == nil {
			c.Close()
			t.Errorf("%s got in with a key it may not use", tc.user)
		}
	}
	c, err := dial("foo", good)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	xc := proxyChannel(t, c, "xpra _proxy")
	if err := xc.Send(frame.Packet{"hello", xpratest.Hello("foo")}); err != nil {
		t.Fatal(err)
	}
	if p, err := xc.Recv(10 * time.Second); err != nil || p.Type() != "hello" {
		t.Fatalf("after a key login: %v %v", p, err)
	}
}

// Connections that offer only refused keys count as failed logins.
func TestSSHRefusedKeysThrottled(t *testing.T) {
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	th := relay.NewThrottle(slog.New(slog.NewTextHandler(io.Discard, nil)))
	addr, _ := proxyWithSSH(t, relay.Config{Throttle: th}, &Server{AuthorizedKeys: filepath.Join(t.TempDir(), "none-%u")},
		"foo|bar|||tcp://"+fs.Addr()+"/")
	_, priv, _ := ed25519.GenerateKey(nil)
	signer, _ := ssh.NewSignerFromKey(priv)
	for range 6 {
		if c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "foo", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second}); err == nil {
			c.Close()
			t.Fatal("an unknown key got in")
		}
	}
	// Counted when the server sees each connection end.
	deadline := time.Now().Add(3 * time.Second)
	for ok, _ := th.Allow("127.0.0.1", "foo"); ok && time.Now().Before(deadline); ok, _ = th.Allow("127.0.0.1", "foo") {
		time.Sleep(20 * time.Millisecond)
	}
	if ok, _ := th.Allow("127.0.0.1", "foo"); ok {
		t.Error("six connections of refused keys left the source unthrottled")
	}
}
