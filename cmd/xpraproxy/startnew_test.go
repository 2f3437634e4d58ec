package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

// `xpra start tcp://user:pass@proxy:port/ --start=xterm` through the
// proxy, from a client of each generation: the proxy (root) starts a
// session of the client's generation (--proxy-start-xpra has both) in the
// worker of the row's account, as that account, and attaches the client
// to it, pixel-exact; the per-user limit refuses one more. A 6.x
// `xpra start-desktop` gets a desktop session.
func TestStartNewSessionThroughProxy(t *testing.T) {
	testenv.NeedRoot(t)
	forEachGen(t, testStartNewSession)
}

// startedXterm is the command the client asks for: titled and placed as
// the package's servers' xterms are (a title bash cannot change, a fixed
// geometry), so that its window is found and compared the same way.
const startedXterm = "xterm -title started -xrm XTerm*allowTitleOps:false -geometry 60x12+0+100"

func testStartNewSession(t *testing.T, g *generation) {
	db := sqliteDB(t, []string{"newbie", "pw", testUser, testUser, ""})
	p := startProxyAs(t, true, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--max-started-sessions=1", "--socket-dirs=PSOCK",
		"--proxy-start-sessions=yes", "--proxy-start-commands=xterm,"+startedXterm, "--proxy-start-xpra="+gen31.xpra+","+gen6.xpra)
	url := fmt.Sprintf("tcp://newbie:pw@127.0.0.1:%d/", p.port)
	c := g.runClient(t, "start", url, "--start="+startedXterm, "--exit-with-children=no")
	started := func(n int) string {
		var display string
		eventually(t, "the new session", 60*time.Second, func() bool {
			m := regexp.MustCompile(`new session started.*display=(:\d+)`).FindAllStringSubmatch(p.logText(), -1)
			if len(m) >= n {
				display = m[n-1][1]
			}
			return len(m) >= n
		})
		t.Cleanup(func() {
			s := &xpraServer{display: display, sockDir: p.sockDir, runtime: filepath.Join(p.sockDir, "runtime"), gen: g}
			s.stop()
		})
		return display
	}
	display := started(1)
	// The session belongs to the row's account.
	sock := fmt.Sprintf("%s/%s-%s", p.sockDir, mustHostname(t), strings.TrimPrefix(display, ":"))
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("new session socket: %v", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || fmt.Sprint(st.Uid) != env.asUser.Uid {
		t.Errorf("the new session's socket is not owned by %s: %+v", testUser, fi.Sys())
	}
	// Of the client's generation: 3.1.3's xpra start, 6.x's seamless.
	mode, prog := "start", regexp.QuoteMeta(gen31.xpra)
	if g.six {
		mode, prog = "seamless", `\S+/bin/xpra`
	}
	out, _ := exec.Command("ps", "-o", "user=,args=", "-u", testUser).Output()
	if !regexp.MustCompile(`(?m)^` + testUser + ` .*` + prog + ` ` + mode + ` --start=xterm .*--socket-dir=` + regexp.QuoteMeta(p.sockDir)).Match(out) {
		t.Errorf("no xpra %s %s started by the proxy owned by %s:\n%s", g.name, mode, testUser, out)
	}
	// The client attached and shows the session's xterm, pixel for pixel.
	pixelsMatch(t, &xpraServer{name: "started", display: display, gen: g}, c, "started")
	if !c.running() {
		t.Fatalf("client exited:\n%s", tail([]byte(c.text()), 2000))
	}
	// One session is the limit: another start is refused with the reason.
	c2 := g.runClient(t, "start", url, "--start=xterm")
	if out := c2.exited(t, 60*time.Second); !strings.Contains(out, "too many sessions") {
		t.Errorf("second start: client said:\n%s", tail([]byte(out), 1500))
	}
	if !g.six {
		return
	}
	// start-desktop from 6.x: a desktop session (the first one stopped).
	s := &xpraServer{display: display, sockDir: p.sockDir, runtime: filepath.Join(p.sockDir, "runtime"), gen: g}
	c.stop()
	if out, err := s.stop(); err != nil {
		t.Fatalf("stopping the first session: %v %s", err, out)
	}
	eventually(t, "the first session to end", 30*time.Second, func() bool { _, err := os.Stat(sock); return err != nil })
	c3 := g.runClient(t, "start-desktop", url, "--start=xterm")
	started(2)
	out, _ = exec.Command("ps", "-o", "user=,args=", "-u", testUser).Output()
	if !regexp.MustCompile(`(?m)^` + testUser + ` .*` + prog + ` desktop --start=xterm `).Match(out) {
		t.Errorf("no xpra 6.x desktop session started:\n%s", out)
	}
	eventually(t, "the desktop in the client", 30*time.Second, func() bool {
		out, _ := exec.Command("xwininfo", "-root", "-tree", "-display", c3.display).Output()
		return strings.Contains(string(out), " on ") && c3.running()
	})
}

func mustHostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
