package main

import (
	"bytes"
	"crypto/ed25519"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/sshd"
)

// sshClientEnv is what the tests' ssh:// clients run with: they accept
// the proxy's host key without asking (no one is there to answer; the
// key's persistence is checked by TestSSHHostKeyKept) and record
// nothing in the user's known_hosts.
var sshClientEnv = []string{"XPRA_SSH_VERIFY_HOSTKEY=0", "XPRA_SSH_ADD_KEY=0", "XPRA_SSH_AGENT_AUTH=0"}

// Debian's 3.1.3 client and the 6.x client, `xpra attach ssh://foo:bar@
// proxy:PORT/ --ssh=paramiko` to the proxy's one tcp port, reach the
// sqlite row's server pixel-exact: as they come (paramiko's "none"
// first, the xpra challenge then logs them in: docs/ssh.md), and with
// "none" off (XPRA_SSH_NONE_AUTH=0), when SSH checks the password and
// no challenge follows. Either way the client's probes and `xpra
// _proxy` are answered as xpra's server answers them.
func TestSSHAttach(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionA") // sessionC is killed by the pool tests, which run first
		db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)})
		p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db)
		url := fmt.Sprintf("ssh://foo:bar@127.0.0.1:%d/", p.port)
		c := g.attach(t, url, "--ssh=paramiko")
		pixelsMatch(t, a, c, a.name+" on ")
		c.stop()
		c = g.runClientEnv(t, "attach", url, []string{"XPRA_SSH_NONE_AUTH=0"}, "--ssh=paramiko")
		pixelsMatch(t, a, c, a.name+" on ")
		log := p.logText()
		for _, want := range []string{`msg="ssh login" peer="ssh 127.0.0.1:`, `method="ssh-none, then the xpra challenge"`,
			`method=ssh-password`, `msg="logged in by the transport"`, `transport=ssh`} {
			if !strings.Contains(log, want) {
				t.Errorf("the proxy's log lacks %s", want)
			}
		}
	})
}

// A wrong password and an unknown user are refused alike, on both
// roads: the xpra challenge after paramiko's "none", and SSH's own
// password check ("none" off).
func TestSSHRefusedAlike(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionD")
		db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)})
		p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--login-throttle=no")
		for _, environ := range [][]string{nil, {"XPRA_SSH_NONE_AUTH=0"}} {
			var refusals []string
			for _, who := range []string{"foo:wrong", "nosuchuser:bar"} {
				url := fmt.Sprintf("ssh://%s@127.0.0.1:%d/", who, p.port)
				out := g.runClientEnv(t, "attach", url, environ, "--ssh=paramiko").exited(t, 60*time.Second)
				refusals = append(refusals, refusalLines(out))
			}
			if refusals[0] == "" || refusals[0] != refusals[1] {
				t.Errorf("%v: a wrong password and an unknown user are told apart:\n%q\n%q", environ, refusals[0], refusals[1])
			}
		}
	})
}

// refusalLines are a client's lines that say why it could not connect,
// without timestamps, the username and the port.
func refusalLines(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		low := strings.ToLower(l)
		if !strings.Contains(low, "authentication") || strings.Contains(low, "trying") {
			continue
		}
		if i := strings.Index(l, ","); i > 0 && i < 24 { // "2026-12-07 18:35:57,231 ..."
			l = l[i+5:]
		}
		l = strings.NewReplacer("nosuchuser", "USER", "foo", "USER").Replace(strings.TrimSpace(l))
		lines = append(lines, regexp.MustCompile(`:\d+`).ReplaceAllString(l, ":PORT"))
	}
	return strings.Join(lines, "\n")
}

// The host key a client saw is the same after a restart (generated once
// into the state directory): Debian's 3.1.3 client with strict host key
// checking against what it was shown before the restart attaches.
func TestSSHHostKeyKept(t *testing.T) {
	a := gen31.srv(t, "sessionD")
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)})
	args := []string{"--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename=" + db}
	p := startProxy(t, args...)
	before := seenHostKeys(t, p.port)
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p = startProxy(t, args...)
	after := seenHostKeys(t, p.port)
	var known strings.Builder
	for algo, k := range before {
		if after[algo] != k {
			t.Errorf("%s host key changed across a restart:\n%s\n%s", algo, k, after[algo])
		}
		fmt.Fprintf(&known, "127.0.0.1 %s", k)
	}
	file := filepath.Join(env.dir, fmt.Sprintf("known_hosts-%d", p.port))
	if err := os.WriteFile(file, []byte(known.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	c := gen31.runClientEnv(t, "attach", fmt.Sprintf("ssh://foo:bar@127.0.0.1:%d/", p.port),
		[]string{"XPRA_SSH_VERIFY_HOSTKEY=1", "XPRA_SSH_VERIFY_STRICT=1", "XPRA_SSH_KNOWN_HOSTS=" + file}, "--ssh=paramiko")
	pixelsMatch(t, a, c, a.name+" on ")
}

// seenHostKeys are the proxy's host keys as an SSH client sees them, by
// algorithm, in authorized_keys format.
func seenHostKeys(t *testing.T, port int) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for _, algo := range []string{ssh.KeyAlgoED25519, ssh.KeyAlgoRSASHA256} {
		conf := &ssh.ClientConfig{User: "probe", HostKeyAlgorithms: []string{algo}, Timeout: 5 * time.Second,
			HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
				keys[algo] = string(ssh.MarshalAuthorizedKey(k))
				return nil
			}}
		if c, err := ssh.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), conf); err == nil {
			c.Close()
		}
		if keys[algo] == "" {
			t.Fatalf("no %s host key", algo)
		}
	}
	return keys
}

// As root the SSH transport stays in the main process, which holds the
// host keys; the logged-in client's plaintext is spliced to a worker
// running as the row's account, which relays it: both generations'
// clients reach the row's server pixel-exact, on both login roads.
func TestSSHAttachRoot(t *testing.T) {
	testenv.NeedRoot(t)
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionB")
		db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)})
		p := startProxyAs(t, true, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db)
		url := fmt.Sprintf("ssh://foo:bar@127.0.0.1:%d/", p.port)
		for _, environ := range [][]string{nil, {"XPRA_SSH_NONE_AUTH=0"}} {
			c := g.runClientEnv(t, "attach", url, environ, "--ssh=paramiko")
			pixelsMatch(t, a, c, a.name+" on ")
			c.stop()
		}
		if log := p.logText(); !strings.Contains(log, "logged in by the transport") || !strings.Contains(log, "worker") {
			t.Errorf("the root proxy's log does not show an SSH login handed to a worker:\n%s", tail([]byte(log), 3000))
		}
	})
}

// A key login: both generations' paramiko clients with a key of the
// user's (no password, "none" off: paramiko's first attempt is then the
// key) reach the row's server, which the proxy found without a
// password; the keys come from the listener's authorized_keys path.
func TestSSHKeyLogin(t *testing.T) {
	dir, err := os.MkdirTemp(env.dir, "sshkeys-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // the proxy (the test user) reads the authorized keys
	home := filepath.Join(dir, "home")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	priv, err := rsa.GenerateKey(cryptorand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(home, ".ssh", "id_rsa")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys-foo"), ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionA")
		db := sqliteDB(t, []string{"foo", "an-unguessable-password", "nobody", "nogroup", target(a)})
		p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db+",authorized_keys="+filepath.Join(dir, "keys-%u"))
		environ := []string{"XPRA_SSH_NONE_AUTH=0", "HOME=" + home, "XPRA_SSH_DEFAULT_KEYFILES=" + keyFile}
		c := g.runClientEnv(t, "attach", fmt.Sprintf("ssh://foo@127.0.0.1:%d/", p.port), environ, "--ssh=paramiko")
		pixelsMatch(t, a, c, a.name+" on ")
		if !strings.Contains(p.logText(), `method="ssh-publickey SHA256:`) {
			t.Errorf("the proxy's log shows no key login")
		}
	})
}

// Which modules SSH logins go through: --ssh-auth on every port that
// has none of its own, else the port's; --bind-ssh is SSH alone;
// --ssh-upgrade=no leaves tcp ports without SSH; --ssh-host-key's file
// is the host key.
func TestSSHListenerOptions(t *testing.T) {
	dir := t.TempDir()
	users := func(name string) string {
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte("foo|bar|||tcp://127.0.0.1:1/\n"), 0o600)
		return f
	}
	tcpUsers, sshUsers, portUsers := users("tcp"), users("ssh"), users("port")
	keys, err := sshd.HostKeys(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	build := func(args ...string) []loop.Listener {
		t.Helper()
		o, err := parseProxyArgsEnv(append([]string{":1", "--tcp-auth=multifile:filename=" + tcpUsers, "--ssh-host-key=" + keyFile}, args...),
			func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		ls, err := listenersFor(o, relay.Config{}, &control{sockDir: dir, hostname: "h", display: ":1"}, log)
		if err != nil {
			t.Fatal(err)
		}
		return ls
	}
	moduleFile := func(m []authn.Module) string {
		if len(m) != 1 {
			return fmt.Sprintf("%d modules", len(m))
		}
		return fmt.Sprint(m[0])
	}
	ls := build("--bind-tcp=127.0.0.1:1", "--bind-tcp=127.0.0.1:2,auth=multifile:filename="+portUsers, "--bind-ssh=127.0.0.1:3",
		"--ssh-auth=multifile:filename="+sshUsers)
	byAddr := map[string]loop.Listener{}
	for _, l := range ls {
		byAddr[l.Address] = l
	}
	for addr, want := range map[string]string{"127.0.0.1:1": sshUsers, "127.0.0.1:2": portUsers, "127.0.0.1:3": sshUsers} {
		l := byAddr[addr]
		srv, ok := l.SSH.(*sshd.Server)
		if !ok {
			t.Fatalf("%s serves no SSH", addr)
		}
		if got := moduleFile(srv.Modules); !strings.Contains(got, want) {
			t.Errorf("%s: SSH logins through %s, want %s", addr, got, want)
		}
		if len(srv.Signers) != 1 || !bytes.Equal(srv.Signers[0].PublicKey().Marshal(), keys[0].PublicKey().Marshal()) {
			t.Errorf("%s: host keys are not --ssh-host-key's", addr)
		}
	}
	if byAddr["127.0.0.1:3"].Kind != "ssh" || byAddr["127.0.0.1:3"].TLS != nil {
		t.Errorf("--bind-ssh: %+v", byAddr["127.0.0.1:3"])
	}
	for _, l := range build("--bind-tcp=127.0.0.1:1", "--ssh-upgrade=no") {
		if l.SSH != nil {
			t.Errorf("--ssh-upgrade=no: %s still serves SSH", l.Address)
		}
	}
}

// The system ssh client (OpenSSH, xpra's --ssh=ssh) with a key: it runs
// the shell one-liner that tries xpra's programs, which the proxy parses
// for its `_proxy` part as xpra's server does, and reaches the row's
// server.
func TestSSHOpenSSHClient(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatalf("OpenSSH's client (openssh-client, with xpra's dependencies) is missing: %v", err)
	}
	dir, err := os.MkdirTemp(env.dir, "openssh-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	_, priv, err := ed25519.GenerateKey(cryptorand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600)
	pub, _ := ssh.NewPublicKey(priv.Public())
	os.WriteFile(filepath.Join(dir, "keys-foo"), ssh.MarshalAuthorizedKey(pub), 0o644)
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionB")
		db := sqliteDB(t, []string{"foo", "an-unguessable-password", "nobody", "nogroup", target(a)})
		p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db+",authorized_keys="+filepath.Join(dir, "keys-%u"))
		sshCmd := "ssh -i " + keyFile + " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes"
		c := g.attach(t, fmt.Sprintf("ssh://foo@127.0.0.1:%d/", p.port), "--ssh="+sshCmd)
		pixelsMatch(t, a, c, a.name+" on ")
	})
}
