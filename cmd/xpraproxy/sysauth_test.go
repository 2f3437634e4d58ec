package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/authn/authntest"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

// The real xpra client logs in through the proxy with a PAM account (the
// test user that owns the xpra sessions, found like `xpra list` for that
// uid) and with an LDAP account mapped to that uid by uid=/gid= options.
// Both modules need the password in clear (xor digest), which xpra's
// client only sends over TLS: the clients use ssl://. A wrong password
// and a locked account are refused with their reasons.
func TestPAMAndLDAPRealClient(t *testing.T) {
	testenv.NeedRoot(t)
	authntest.LocalUser(t, testUser, "xpratest-pw")
	authntest.LocalUser(t, "xprapamlocked", "locked-pw")
	if out, err := exec.Command("usermod", "-L", "xprapamlocked").CombinedOutput(); err != nil {
		t.Fatalf("usermod -L: %v %s", err, out)
	}
	ldapPort := authntest.Slapd(t, authn.Domain())
	cert, key := writeCert(t)
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionA")
		ldapListen := freePort()
		p := startProxyAs(t, true, "--bind-tcp=127.0.0.1:PORT,auth=pam",
			fmt.Sprintf("--bind-tcp=127.0.0.1:%d,auth=ldap,host=127.0.0.1,port=%d,uid=%s,gid=%s", ldapListen, ldapPort, testUser, testUser),
			"--socket-dirs="+sessionDir(a), "--ssl-cert="+cert, "--ssl-key="+key)
		verify := "--ssl-server-verify-mode=none"

		t.Run("pam", func(t *testing.T) {
			c := g.attach(t, fmt.Sprintf("ssl://%s:xpratest-pw@127.0.0.1:%d/", testUser, p.port), verify)
			pixelsMatch(t, a, c, fmt.Sprintf("sessionA on ssl://%s@127.0.0.1:%d/", testUser, p.port))
			c.stop()
		})
		t.Run("ldap", func(t *testing.T) {
			c := g.attach(t, fmt.Sprintf("ssl://alice:wonderland@127.0.0.1:%d/", ldapListen), verify)
			pixelsMatch(t, a, c, fmt.Sprintf("sessionA on ssl://alice@127.0.0.1:%d/", ldapListen))
			c.stop()
		})
		for _, tc := range []struct{ name, url, want string }{
			{"pam wrong password", fmt.Sprintf("ssl://%s:nope@127.0.0.1:%d/", testUser, p.port), "authentication failed"},
			{"pam locked account", fmt.Sprintf("ssl://xprapamlocked:locked-pw@127.0.0.1:%d/", p.port), "account locked"},
			{"ldap wrong password", fmt.Sprintf("ssl://alice:looking-glass@127.0.0.1:%d/", ldapListen), "authentication failed"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := g.attach(t, tc.url, verify)
				if out := c.exited(t, 30*time.Second); !strings.Contains(out, tc.want) {
					t.Errorf("client said:\n%s", tail([]byte(out), 1500))
				}
			})
		}
		if log := p.logText(); strings.Contains(log, "xpratest-pw") || strings.Contains(log, "wonderland") || strings.Contains(log, "locked-pw") {
			t.Errorf("a password reached the log")
		}
	})
}
