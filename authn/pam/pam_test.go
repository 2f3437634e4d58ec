package pam

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/authn/authntest"
)

// The real PAM stack (Debian's "login" service, pam_unix) with real local
// accounts: the right password passes and yields the account, a wrong one
// and an expired account are refused, the latter with PAM's reason.
func TestPAM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create test accounts (CI runs the tests as root)")
	}
	authntest.LocalUser(t, "xprapam", "pam-secret-1")
	authntest.LocalUser(t, "xprapamold", "pam-secret-2")
	if out, err := exec.Command("chage", "-E", "0", "xprapamold").CombinedOutput(); err != nil {
		t.Fatalf("chage: %v %s", err, out)
	}
	m, err := authn.New(authn.Spec{Name: "pam", Options: map[string]string{"service": "login"}}, authn.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if !authn.NeedsCleartext(m) || !m.Challenge() {
		t.Fatal("pam must challenge for the password in clear (xor)")
	}
	id, err := m.Authenticate(authn.Request{Username: "xprapam", Password: []byte("pam-secret-1")})
	if err != nil || id.Username != "xprapam" {
		t.Fatalf("right password: %v %+v", err, id)
	}
	acct, err := authn.ResolveAccount(id)
	if err != nil || acct.Name != "xprapam" || acct.UID == 0 {
		t.Errorf("account: %+v %v", acct, err)
	}
	if _, err := m.Authenticate(authn.Request{Username: "xprapam", Password: []byte("wrong")}); !errors.Is(err, authn.ErrAuthFailed) {
		t.Errorf("wrong password: %v", err)
	}
	_, err = m.Authenticate(authn.Request{Username: "xprapamold", Password: []byte("pam-secret-2")})
	if !errors.Is(err, authn.ErrAuthFailed) || !strings.Contains(authn.Why(err), "expired") {
		t.Errorf("expired account: %v (why %q)", err, authn.Why(err))
	}
	if _, err := m.Authenticate(authn.Request{Username: "xprapam"}); !errors.Is(err, authn.ErrAuthFailed) {
		t.Errorf("no password: %v", err)
	}
	authntest.LocalUser(t, "xprapamlocked", "pam-secret-3")
	exec.Command("usermod", "-L", "xprapamlocked").Run()
	_, err = m.Authenticate(authn.Request{Username: "xprapamlocked", Password: []byte("pam-secret-3")})
	if !errors.Is(err, authn.ErrAuthFailed) || authn.Why(err) != "account locked" {
		t.Errorf("locked account: %v (why %q)", err, authn.Why(err))
	}
}
