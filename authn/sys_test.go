package authn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/xpraproxy/xpraproxy/authn/authntest"
)

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create test accounts (CI runs the tests as root)")
	}
}

// A real slapd: the user's DN from username_format, a bind with the
// password, uid=/gid= for the account (a non-local user).
func TestLDAP(t *testing.T) {
	port := authntest.Slapd(t, Domain())
	for _, name := range []string{"ldap", "ldap3"} {
		m, err := New(Spec{Name: name, Options: map[string]string{"host": "127.0.0.1", "port": fmt.Sprint(port),
			"uid": "nobody", "gid": "nogroup"}}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		id, err := m.Authenticate(Request{Username: "alice", Password: []byte("wonderland")})
		if err != nil || id.Username != "alice" || id.UID != "nobody" {
			t.Fatalf("%s: right password: %v %+v", name, err, id)
		}
		for _, bad := range []Request{{Username: "alice", Password: []byte("looking-glass")}, {Username: "bob", Password: []byte("wonderland")},
			{Username: "alice"}, {Username: "alice,ou=x", Password: []byte("wonderland")}} {
			if _, err := m.Authenticate(bad); !errors.Is(err, ErrAuthFailed) {
				t.Errorf("%s: %q/%q: %v", name, bad.Username, bad.Password, err)
			}
		}
	}
	// ldaps:// with the server's certificate as the CA, and refused
	// without it (verification on).
	tport, ca := authntest.SlapdTLS(t, Domain())
	secure, err := New(Spec{Name: "ldap3", Options: map[string]string{"host": "127.0.0.1", "port": fmt.Sprint(tport),
		"tls": "1", "cacert": ca}}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := secure.Authenticate(Request{Username: "alice", Password: []byte("wonderland")}); err != nil || id.Username != "alice" {
		t.Errorf("ldaps: %v %+v", err, id)
	}
	if _, err := secure.Authenticate(Request{Username: "alice", Password: []byte("nope")}); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("ldaps wrong password: %v", err)
	}
	untrusted, _ := New(Spec{Name: "ldap3", Options: map[string]string{"host": "127.0.0.1", "port": fmt.Sprint(tport), "tls": "1"}}, Env{})
	if _, err := untrusted.Authenticate(Request{Username: "alice", Password: []byte("wonderland")}); err == nil || errors.Is(err, ErrAuthFailed) {
		t.Errorf("ldaps with an unknown CA should be an error: %v", err)
	}
	m, _ := New(Spec{Name: "ldap", Options: map[string]string{"host": "127.0.0.1", "port": "1"}}, Env{})
	if _, err := m.Authenticate(Request{Username: "alice", Password: []byte("x")}); err == nil || errors.Is(err, ErrAuthFailed) {
		t.Errorf("unreachable server should be an error, not a refusal: %v", err)
	}
}

type fakePeer struct {
	addr net.Addr
	fd   int
}

func (f fakePeer) RemoteAddr() net.Addr { return f.addr }
func (f fakePeer) Fd() int              { return f.fd }

func TestHosts(t *testing.T) {
	dir := t.TempDir()
	allow, deny := filepath.Join(dir, "allow"), filepath.Join(dir, "deny")
	os.WriteFile(allow, []byte("sshd: ALL\nxpra: 10.1.2.3, 192.168. EXCEPT 192.168.9.9 # lan\n"), 0o644)
	os.WriteFile(deny, []byte("ALL: ALL\n"), 0o644)
	m, err := New(Spec{Name: "hosts", Options: map[string]string{"allow": allow, "deny": deny}}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"10.1.2.3": true, "192.168.1.7": true, "192.168.9.9": false, "127.0.0.1": false, "8.8.8.8": false} {
		_, err := m.Authenticate(Request{Username: "u", Conn: fakePeer{addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 5}}})
		if (err == nil) != want {
			t.Errorf("%s: %v, want allowed=%v", ip, err, want)
		}
		if err != nil && Why(err) != "host not allowed" {
			t.Errorf("%s: reason %q", ip, Why(err))
		}
	}
}

func TestPeercred(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, _ := net.Dial("unix", sock)
	defer c.Close()
	srv, _ := l.Accept()
	defer srv.Close()
	f, _ := srv.(*net.UnixConn).File()
	defer f.Close()
	peer := fakePeer{addr: &net.UnixAddr{Name: "@", Net: "unix"}, fd: int(f.Fd())}
	me, _ := New(Spec{Name: "peercred", Options: map[string]string{}}, Env{})
	id, err := me.Authenticate(Request{Conn: peer})
	if err != nil || id.UID != fmt.Sprint(os.Getuid()) {
		t.Fatalf("own uid: %v %+v", err, id)
	}
	other, _ := New(Spec{Name: "peercred", Options: map[string]string{"allow-uids": "nobody"}}, Env{})
	if _, err := other.Authenticate(Request{Conn: peer}); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("other uid allowed: %v", err)
	}
	if _, err := me.Authenticate(Request{Conn: fakePeer{addr: &net.TCPAddr{}}}); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("tcp peer: %v", err)
	}
}
