package main

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

// A reload (docs/reload.md) while a real client of each generation is
// attached: a new listener with a file-based module and a user of its
// own, and a rotated certificate, take effect; the attached client keeps
// its window pixel for pixel; a conf file with a typo is refused with the
// file and line, and the previous configuration keeps serving. Without
// root by SIGHUP, as root (workers) by `xpraproxy reload`.
func TestReloadRealClient(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) { testReload(t, g, false) })
}

func TestReloadRealClientAsRoot(t *testing.T) {
	testenv.NeedRoot(t)
	forEachGen(t, func(t *testing.T, g *generation) { testReload(t, g, true) })
}

func testReload(t *testing.T, g *generation, root bool) {
	a, c := g.srv(t, "sessionA"), g.srv(t, "sessionB") // sessionC is killed by an earlier test
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)})
	cert1, key1 := writeCert(t)
	cert2, key2 := writeCert(t)
	dir := sharedDir(t, "reload")
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("moo|cow|nobody|nogroup|"+target(c)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "xpraproxy.conf")
	port, port2 := freePort(), freePort()
	write := func(lines ...string) {
		t.Helper()
		// A new file renamed into place, as editors and config managers do.
		tmp := conf + ".new"
		if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, conf); err != nil {
			t.Fatal(err)
		}
	}
	bind1 := fmt.Sprintf("bind-tcp = 127.0.0.1:%d,auth=sqlite:filename=%s", port, db)
	bind2 := fmt.Sprintf("bind-tcp = 127.0.0.1:%d,auth=multifile:filename=%s", port2, users)
	write("# before the reload", bind1, "ssl-cert = "+cert1, "ssl-key = "+key1)
	p := launchProxyOn(t, root, 0, port, env.bin, "--config="+conf)

	// reload asks the proxy to reload (SIGHUP without root, `xpraproxy
	// reload` as root) and returns what it answered or logged.
	reloads := 0
	reload := func() (string, bool) {
		t.Helper()
		reloads++
		if root {
			out, err := exec.Command(env.bin, "reload", p.display, "--socket-dir="+p.sockDir).CombinedOutput()
			return string(out), err == nil
		}
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			var outcomes []string
			for _, line := range strings.Split(p.logText(), "\n") {
				if strings.Contains(line, "msg=reloaded") || strings.Contains(line, "reload refused") {
					outcomes = append(outcomes, line)
				}
			}
			if len(outcomes) >= reloads {
				last := outcomes[reloads-1]
				return last, strings.Contains(last, "msg=reloaded")
			}
		}
		t.Fatalf("no reload outcome in the log after SIGHUP:\n%s", tail([]byte(p.logText()), 2000))
		return "", false
	}
	// served is the certificate the proxy's port presents.
	served := func() []byte {
		t.Helper()
		tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
			&tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TLS to the proxy: %v", err)
		}
		defer tc.Close()
		return tc.ConnectionState().PeerCertificates[0].Raw
	}
	der := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM block", path)
		}
		return blk.Bytes
	}

	attached := g.attach(t, fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", port))
	title := fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", port)
	pixelsMatch(t, a, attached, title)
	if !bytes.Equal(served(), der(cert1)) {
		t.Fatal("the proxy does not present its first certificate")
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port2), time.Second); err == nil {
		c.Close()
		t.Fatalf("port %d accepts before the reload adds it", port2)
	}

	write("# after the reload: a second port, a new certificate", bind1, bind2, "ssl-cert = "+cert2, "ssl-key = "+key2)
	out, ok := reload()
	if !ok || !strings.Contains(out, fmt.Sprintf("tcp://127.0.0.1:%d", port2)) {
		t.Fatalf("reload: %s", out)
	}
	if !bytes.Equal(served(), der(cert2)) {
		t.Error("the reload did not rotate the certificate")
	}
	second := g.attach(t, fmt.Sprintf("tcp://moo:cow@127.0.0.1:%d/", port2))
	pixelsMatch(t, c, second, fmt.Sprintf("sessionB on tcp://moo@127.0.0.1:%d/", port2))
	second.stop()
	if !attached.running() {
		t.Fatalf("the client attached before the reload exited:\n%s", tail([]byte(attached.text()), 2000))
	}
	pixelsMatch(t, a, attached, title)

	// A typo: refused with the file and line, the old configuration serves.
	write("# a broken configuration", bind1, "bind-tpc = 127.0.0.1:1", "ssl-cert = "+cert1, "ssl-key = "+key1)
	out, ok = reload()
	if ok || !strings.Contains(out, "reload refused") || !strings.Contains(out, conf+":3") || !strings.Contains(out, "bind-tcp") {
		t.Fatalf("a broken configuration was not refused with its file, line and the option meant: %s", out)
	}
	if !bytes.Equal(served(), der(cert2)) {
		t.Error("a refused reload changed the certificate")
	}
	if nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port2), time.Second); err != nil {
		t.Errorf("a refused reload closed port %d: %v", port2, err)
	} else {
		nc.Close()
	}
	if !attached.running() {
		t.Fatalf("the client attached before the reloads exited:\n%s", tail([]byte(attached.text()), 2000))
	}
	pixelsMatch(t, a, attached, title)
	if text := attached.text(); strings.Contains(text, "connection lost") || strings.Contains(text, "reconnect") {
		t.Errorf("the attached client saw its connection go:\n%s", tail([]byte(text), 2000))
	}
	attached.stop()
}
