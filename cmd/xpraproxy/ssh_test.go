package main

import (
	"fmt"
	"strings"
	"testing"
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
		a := g.srv(t, "sessionC")
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
