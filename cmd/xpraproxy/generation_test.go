package main

// The two xpra generations of the interop harness: Debian's 3.1.3 and
// 6.x built from PyPI (interop/xpra6.sh), each with its own program,
// options, runtime directories and X cookies.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// generation is one xpra release line the tests run against.
type generation struct {
	name    string // subtest name: "3.1" or "6.x"
	xpra    string // its xpra program
	six     bool   // xpra ≥ 6: nested caps, rencodeplus only, its own runtime dir
	servers map[string]*xpraServer
}

var (
	gen31 = &generation{name: "3.1", xpra: "/usr/bin/xpra"}
	gen6  = &generation{name: "6.x", six: true}
)

// generations are both, oldest first.
func generations() []*generation { return []*generation{gen31, gen6} }

// forEachGen runs f as one subtest per generation ("3.1", "6.x"), side by
// side: each generation has servers of its own.
func forEachGen(t *testing.T, f func(t *testing.T, g *generation)) {
	t.Helper()
	for _, g := range generations() {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			f(t, g)
		})
	}
}

// quietFor is the quiet options for the generation (6.x has no
// --dbus-proxy; its wrapper's config turns dbus off).
func (g *generation) quiet() []string {
	if g.six {
		return quiet[:len(quiet)-1]
	}
	return quiet
}

// runtimeDir is XDG_RUNTIME_DIR for 6.x processes of the test user (as
// true) or of this process: 6.x keeps sockets and X cookies there.
func runtimeDir(asTestUser bool) string {
	if asTestUser {
		return filepath.Join(env.dir, "run6-user")
	}
	return filepath.Join(env.dir, "run6-self")
}

// command runs the generation's xpra as the test user (asUser) or as
// this process, with the generation's environment.
func (g *generation) command(asTestUser bool, args ...string) *exec.Cmd {
	return g.commandIn(runtimeDir(asTestUser), asTestUser, args...)
}

// commandIn is command with XDG_RUNTIME_DIR rt for 6.x (each 6.x server
// has its own, so that its <rt>/xpra/N/socket is alone there).
func (g *generation) commandIn(rt string, asTestUser bool, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if asTestUser {
		cmd = asUser(g.xpra, args...)
	} else {
		cmd = exec.Command(g.xpra, args...)
		cmd.Env = append(os.Environ(), "XPRA_NOTTY=1")
	}
	if g.six {
		cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+rt)
	}
	return cmd
}

// srv returns the generation's server named name (sessionA...).
func (g *generation) srv(t *testing.T, name string) *xpraServer {
	t.Helper()
	s := g.servers[name]
	if s == nil {
		t.Fatalf("xpra %s server %s did not start", g.name, name)
	}
	return s
}

// stop stops the server with its own generation's xpra.
func (s *xpraServer) stop() ([]byte, error) {
	return s.gen.commandIn(s.runtime, true, "stop", s.display, "--socket-dir="+s.sockDir, "--socket-dirs="+s.sockDir).CombinedOutput()
}

// kill ends the server at once, as a crash would, and its X server with
// it, which xpra stop would have ended: 3.1.3 names it
// Xvfb-for-Xpra-:N, 6.x Xvfb-for-Xpra-N (a pattern for one only left
// the other's running after the tests).
func (s *xpraServer) kill() {
	n := regexp.QuoteMeta(strings.TrimPrefix(s.display, ":"))
	exec.Command("pkill", "-9", "-f", "xpra.* start :"+n+" ").Run()
	exec.Command("pkill", "-9", "-f", "^Xvfb-for-Xpra-:?"+n+"( |$)").Run()
}

// mmapServer is the server of each generation that offers mmap (the
// others of 3.1.3 run with --mmap=no; clients say --mmap=no unless a test
// asks for it).
const mmapServer = "sessionD"

// startXpra starts a 3.1.3 server (the tests that are not per generation).
func startXpra(name string, extra ...string) (*xpraServer, error) {
	return gen31.startXpra(name, extra...)
}

// startXpra starts a server of the generation, as the test user, running
// an xterm titled name. A port taken between its choice and the server's
// bind (tests of other packages run alongside) is chosen again.
func (g *generation) startXpra(name string, extra ...string) (*xpraServer, error) {
	for try := 1; ; try++ {
		s, err := g.startXpraOnce(name, extra...)
		if err == nil || try == 3 || !strings.Contains(err.Error(), "Address already in use") {
			return s, err
		}
	}
}

func (g *generation) startXpraOnce(name string, extra ...string) (*xpraServer, error) {
	s := &xpraServer{name: name, display: freeDisplay(), port: freePort(), sockDir: filepath.Join(env.dir, "sock-"+g.name+"-"+name), gen: g}
	if err := os.MkdirAll(s.sockDir, 0o777); err != nil {
		return nil, err
	}
	os.Chmod(s.sockDir, 0o777)
	s.runtime = filepath.Join(env.dir, "run6-"+name+"-"+s.display[1:])
	if g.six {
		if err := os.MkdirAll(s.runtime, 0o700); err != nil {
			return nil, err
		}
		if env.asUser != nil {
			uid, _ := strconv.Atoi(env.asUser.Uid)
			gid, _ := strconv.Atoi(env.asUser.Gid)
			os.Chown(s.runtime, uid, gid)
		}
	}
	logFile := fmt.Sprintf("server-%s-%s.log", g.name, name)
	args := append([]string{"start", s.display,
		"--start=xterm -title " + name + " -xrm XTerm*allowTitleOps:false -geometry 60x12+0+100 -e bash -c 'echo this is " + name + "; exec bash'",
		"--bind-tcp=127.0.0.1:" + strconv.Itoa(s.port), "--daemon=yes", "--systemd-run=no",
		"--socket-dir=" + s.sockDir, "--socket-dirs=" + s.sockDir, "--log-dir=" + env.dir, "--log-file=" + logFile}, g.quiet()...)
	if !g.six && name != mmapServer {
		// xpra 6.5.5's server fails every connection with --mmap=no (its
		// window compressor imports the module the option blocks); its
		// clients turn mmap off instead.
		args = append(args, "--mmap=no")
	}
	args = append(args, extra...)
	if d := os.Getenv("XPRAPROXY_DEBUG_SERVER"); d != "" {
		args = append(args, "-d", d)
	}
	logStart := 0 // a retry appends to the log of the try before
	if fi, err := os.Stat(filepath.Join(env.dir, logFile)); err == nil {
		logStart = int(fi.Size())
	}
	if out, err := g.commandIn(s.runtime, true, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("xpra %s start %s: %v: %s", g.name, name, err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port)); err == nil {
			c.Close()
			if id, _ := windowID(s.display, true, name); id != "" {
				return s, nil
			}
		} else if log, _ := os.ReadFile(filepath.Join(env.dir, logFile)); len(log) > logStart && bytes.Contains(log[logStart:], []byte("xpra initialization error")) {
			break // it gave up (a port taken meanwhile): no need to wait
		}
		time.Sleep(300 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(env.dir, logFile))
	return nil, fmt.Errorf("xpra %s server %s (%s) did not come up:\n%s", g.name, name, s.display, tail(log, 2000))
}

// serverXAuth is the X cookie file of a 6.x server's display (6.x keeps
// it in its runtime dir, XPRA_PRIVATE_XAUTH: Xauthority-N, or
// Xauthority-S<pid> for a session started with --displayfd); "" for
// 3.1.3's displays (~/.Xauthority).
func serverXAuth(display string) string {
	n := strings.TrimPrefix(display, ":")
	var files []string
	for _, p := range []string{filepath.Join(env.dir, "run6-*", "xpra", "Xauthority-*"),
		filepath.Join(env.dir, "*", "runtime", "xpra", "Xauthority-*")} {
		m, _ := filepath.Glob(p)
		files = append(files, m...)
	}
	for _, f := range files {
		if xauthHas(f, n) {
			return f
		}
	}
	return ""
}

// xauthHas reports whether an Xauthority file has an entry for display
// number n (entries: family, then address, number, name and data, each a
// 16-bit big-endian length and its bytes).
func xauthHas(file, n string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	field := func() ([]byte, bool) {
		if len(b) < 2 {
			return nil, false
		}
		l := int(b[0])<<8 | int(b[1])
		if len(b) < 2+l {
			return nil, false
		}
		f := b[2 : 2+l]
		b = b[2+l:]
		return f, true
	}
	for len(b) >= 2 {
		b = b[2:] // family
		_, ok1 := field()
		num, ok2 := field()
		_, ok3 := field()
		_, ok4 := field()
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return false
		}
		if string(num) == n {
			return true
		}
	}
	return false
}

// asUserX runs an X tool against a server's display as the test user.
func asUserX(display string, name string, args ...string) *exec.Cmd {
	cmd := asUser(name, args...)
	if xa := serverXAuth(display); xa != "" {
		cmd.Env = append(cmd.Env, "XAUTHORITY="+xa)
	}
	return cmd
}
