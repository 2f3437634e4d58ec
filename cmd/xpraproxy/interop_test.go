package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// srv is a 3.1.3 server (tests that are not per generation).
func srv(t *testing.T, name string) *xpraServer {
	t.Helper()
	return gen31.srv(t, name)
}

func target(s *xpraServer) string { return fmt.Sprintf("tcp://127.0.0.1:%d/", s.port) }

// The seed's "Remote Hosts Example": two sessions reached through a sqlite
// database, foo:bar on the URL and moo:cow (compression=0) through a
// password file, both attached at once.
func TestRemoteHostsExample(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		a, b := g.srv(t, "sessionA"), g.srv(t, "sessionB")
		db := sqliteDB(t,
			[]string{"foo", "bar", "nobody", "nogroup", target(a)},
			[]string{"moo", "cow", "nobody", "nogroup", target(b), "", "compression=0"})
		p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db)
		c1 := g.attach(t, fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", p.port))
		pw := filepath.Join(env.dir, "password-"+g.name+".txt")
		os.WriteFile(pw, []byte("cow"), 0o600)
		c2 := g.attach(t, fmt.Sprintf("tcp://moo@127.0.0.1:%d/", p.port), "--password-file="+pw)
		pixelsMatch(t, a, c1, fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port))
		pixelsMatch(t, b, c2, fmt.Sprintf("sessionB on tcp://moo@127.0.0.1:%d/", p.port))
		if !c1.running() || !c2.running() {
			t.Fatal("a client exited")
		}
		log := p.logText()
		if !strings.Contains(log, "user=moo") || strings.Contains(log, "cow") || strings.Contains(log, "=bar") {
			t.Errorf("proxy log should name users and never passwords:\n%s", log)
		}
	})
}

// The same database made by xpra's own sqlite module (3.1.3's
// sqlite_auth.py, 6.x's xpra.auth.sqlite) works with us (the other
// direction is tested in authn).
func TestXpraMadeDatabase(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionA")
		db := filepath.Join(env.dir, "xpra-made-"+g.name+".sdb")
		script := []string{"/usr/lib/python3/dist-packages/xpra/server/auth/sqlite_auth.py", db}
		var extraEnv []string
		if g.six {
			sites, _ := filepath.Glob(filepath.Join(filepath.Dir(g.xpra), "local", "lib", "python3*", "dist-packages"))
			if len(sites) == 0 {
				t.Fatalf("no dist-packages beside %s", g.xpra)
			}
			script = []string{"-m", "xpra.auth.sqlite", db}
			extraEnv = []string{"PYTHONPATH=" + sites[0]}
		}
		for _, args := range [][]string{{"create"}, {"add", "joe", "pw1", "nobody", "nogroup", target(a)}} {
			cmd := asUser("/usr/bin/python3", append(append([]string(nil), script...), args...)...)
			cmd.Env = append(cmd.Env, extraEnv...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("xpra %s sqlite %v: %v %s", g.name, args, err, out)
			}
		}
		p := startProxy(t, "--bind-tcp=127.0.0.1:PORT", "--tcp-auth=sqlite,filename="+db)
		c := g.attach(t, fmt.Sprintf("tcp://joe:pw1@127.0.0.1:%d/", p.port))
		pixelsMatch(t, a, c, fmt.Sprintf("sessionA on tcp://joe@127.0.0.1:%d/", p.port))
	})
}

// The seed's allow example with one local session: found in the socket
// dir the way `xpra list` finds it, no display needed.
func TestAllowOneLocalSession(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionA")
		p := startProxy(t, "--tcp-auth=allow", "--bind-tcp=127.0.0.1:PORT", "--socket-dirs="+sessionDir(a))
		c := g.attach(t, fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", p.port))
		pixelsMatch(t, a, c, fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port))
	})
}

// sessionDir is where the proxy finds a local server's socket: 3.1's
// <dir>/<host>-N, or for 6.x the <runtime>/xpra/N/socket layout (6.x
// writes both; the runtime dir is the one 6.x's own tools use).
func sessionDir(s *xpraServer) string {
	if s.gen.six {
		return filepath.Join(s.runtime, "xpra")
	}
	return s.sockDir
}

// With two local sessions the client must name one (/NN); without, it is
// told to.
func TestAllowTwoLocalSessions(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		a, b := g.srv(t, "sessionA"), g.srv(t, "sessionB")
		p := startProxy(t, "--tcp-auth=allow", "--bind-tcp=127.0.0.1:PORT", "--socket-dirs="+sessionDir(a)+","+sessionDir(b))
		c := g.attach(t, fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", p.port))
		out := c.exited(t, 30*time.Second)
		if !strings.Contains(out, "please specify a display") {
			t.Errorf("client without a display was not told to name one:\n%s", tail([]byte(out), 1500))
		}
		num := strings.TrimPrefix(b.display, ":")
		c2 := g.attach(t, fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/%s", p.port, num))
		pixelsMatch(t, b, c2, fmt.Sprintf("sessionB on tcp://foo@127.0.0.1:%d/", p.port))
	})
}

// xpra info, version and list of each generation's CLI see the proxy.
func TestXpraInfoThroughProxy(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		a := g.srv(t, "sessionA")
		db := sqliteDB(t, []string{"foo", "bar", "", "", target(a)})
		p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite,filename="+db)
		out, err := g.command(false, "info", fmt.Sprintf("tcp://foo:bar@127.0.0.1:%d/", p.port)).CombinedOutput()
		if err != nil {
			t.Fatalf("xpra info: %v\n%s", err, out)
		}
		for _, want := range []string{"mode=proxy", "user=foo", "xpraproxy.version="} {
			if !strings.Contains(string(out), want) {
				t.Errorf("xpra info lacks %q:\n%s", want, out)
			}
		}
		// A wrong password gets no info.
		out, _ = g.command(false, "info", fmt.Sprintf("tcp://foo:nope@127.0.0.1:%d/", p.port)).CombinedOutput()
		if strings.Contains(string(out), "mode=proxy") || !strings.Contains(string(out), "authentication failed") {
			t.Errorf("xpra info with a wrong password:\n%s", out)
		}
		// `xpra version` (answered before login, so without a password:
		// 3.1.3 fails when a password it has is not asked for) gets the
		// client's own generation back.
		out, err = g.command(false, "version", fmt.Sprintf("tcp://127.0.0.1:%d/", p.port)).CombinedOutput()
		want := "3.1.3"
		if g.six {
			want = "6."
		}
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("xpra version: %v\n%s", err, out)
		}
		// `xpra list` sees the proxy's own socket.
		list, _ := g.command(true, "list", "--socket-dirs="+p.sockDir).CombinedOutput()
		if !strings.Contains(string(list), "LIVE session at :") {
			t.Errorf("xpra list does not show the proxy:\n%s", list)
		}
	})
}

// Every failure ends only its own connection, with a reason, while a
// client attached before keeps working.
func TestFailuresLeaveOthersAttached(t *testing.T) {
	forEachGen(t, testFailuresLeaveOthersAttached)
}

func testFailuresLeaveOthersAttached(t *testing.T, g *generation) {
	a, c := g.srv(t, "sessionA"), g.srv(t, "sessionC")
	dead := freePort()
	db := sqliteDB(t,
		[]string{"foo", "bar", "", "", target(a)},
		[]string{"gone", "pw", "", "", fmt.Sprintf("tcp://127.0.0.1:%d/", dead)},
		[]string{"kill", "pw", "", "", target(c)})
	p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite,filename="+db, "--login-timeout=3")
	url := func(cred string) string { return fmt.Sprintf("tcp://%s@127.0.0.1:%d/", cred, p.port) }
	good := g.attach(t, url("foo:bar"))
	goodTitle := fmt.Sprintf("sessionA on tcp://foo@127.0.0.1:%d/", p.port)
	pixelsMatch(t, a, good, goodTitle)

	expect := func(name, cred, want string) {
		t.Run(name, func(t *testing.T) {
			out := g.attach(t, url(cred)).exited(t, 40*time.Second)
			if !strings.Contains(out, want) {
				t.Errorf("client output lacks %q:\n%s", want, tail([]byte(out), 1500))
			}
		})
	}
	expect("wrong password", "foo:wrong", "authentication failed")
	expect("unknown user", "nobody:x", "authentication failed")
	expect("dead target", "gone:pw", "failed to connect to display")

	t.Run("garbage instead of a hello", func(t *testing.T) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte("GARBAGE GARBAGE GARBAGE\n"))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if !strings.HasPrefix(line, "disconnect: invalid packet format") {
			t.Errorf("reply to garbage: %q", line)
		}
	})
	t.Run("silent client", func(t *testing.T) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		b, _ := io.ReadAll(conn)
		if !strings.Contains(string(b), "login timeout") || time.Since(start) > 8*time.Second {
			t.Errorf("silent client got %q after %v", b, time.Since(start))
		}
	})
	t.Run("target killed mid-session", func(t *testing.T) {
		victim := g.attach(t, url("kill:pw"))
		pixelsMatch(t, c, victim, fmt.Sprintf("sessionC on tcp://kill@127.0.0.1:%d/", p.port))
		if out, err := c.stop(); err != nil {
			t.Fatalf("xpra stop: %v %s", err, out)
		}
		delete(g.servers, "sessionC")
		out := victim.exited(t, 30*time.Second)
		if !strings.Contains(out, "server shutdown") && !strings.Contains(out, "server connection lost") {
			t.Errorf("client of the killed target did not see why:\n%s", tail([]byte(out), 1500))
		}
	})
	if !good.running() {
		t.Fatalf("the first client died:\n%s", tail([]byte(good.text()), 2000))
	}
	pixelsMatch(t, a, good, goodTitle)
	if log := p.logText(); strings.Contains(log, "wrong") || strings.Contains(log, "=pw") {
		t.Errorf("a password reached the log:\n%s", log)
	}
}

// A client with mmap on and off, to the server that offers mmap, is
// pixel-exact through the proxy, for each generation. (Whether the shared
// area is really used is not asserted: the client runs as root and the
// server as the test user, who cannot open root's area file; xpra then
// falls back to sending pixels, which is what a proxy on another host
// sees too.)
func TestMmapOnAndOff(t *testing.T) {
	forEachGen(t, func(t *testing.T, g *generation) {
		d := g.srv(t, mmapServer)
		db := sqliteDB(t, []string{"mm", "pw", "", "", target(d)})
		p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db)
		for _, mmap := range []string{"yes", "no"} {
			t.Run("mmap="+mmap, func(t *testing.T) {
				c := g.attach(t, fmt.Sprintf("tcp://mm:pw@127.0.0.1:%d/", p.port), "--mmap="+mmap)
				pixelsMatch(t, d, c, fmt.Sprintf("%s on tcp://mm@127.0.0.1:%d/", d.name, p.port))
				c.stop()
			})
		}
	})
}
