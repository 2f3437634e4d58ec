package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `xpra start tcp://user:pass@proxy:port/ --start=xterm` through the
// proxy: the proxy (root) starts the session in the worker of the row's
// account, as that account, and attaches the client to it; the per-user
// limit refuses one more.
func TestStartNewSessionThroughProxy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting sessions as another user needs root; CI runs the tests as root")
	}
	db := sqliteDB(t, []string{"newbie", "pw", testUser, testUser, ""})
	p := startProxyAs(t, true, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--max-started-sessions=1", "--socket-dirs=PSOCK",
		"--proxy-start-sessions=yes", "--proxy-start-commands=xterm")
	url := fmt.Sprintf("tcp://newbie:pw@127.0.0.1:%d/", p.port)
	c := runClient(t, "start", url, "--start=xterm", "--exit-with-children=no")
	var display string
	eventually(t, "the new session", 60*time.Second, func() bool {
		m := regexp.MustCompile(`new session started.*display=(:\d+)`).FindStringSubmatch(p.logText())
		if m != nil {
			display = m[1]
		}
		return m != nil
	})
	t.Cleanup(func() {
		asUser("xpra", "stop", display, "--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir).Run()
	})
	// The session belongs to the row's account.
	sock := fmt.Sprintf("%s/%s-%s", p.sockDir, mustHostname(t), strings.TrimPrefix(display, ":"))
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("new session socket: %v", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || fmt.Sprint(st.Uid) != env.asUser.Uid {
		t.Errorf("the new session's socket is not owned by %s: %+v", testUser, fi.Sys())
	}
	out, _ := exec.Command("ps", "-o", "user=,args=", "-u", testUser).Output()
	if !regexp.MustCompile(`(?m)^` + testUser + ` .*xpra start --start=xterm .*--socket-dir=` + regexp.QuoteMeta(p.sockDir)).Match(out) {
		t.Errorf("no xpra server started by the proxy owned by %s:\n%s", testUser, out)
	}
	// The client attached and shows the session's xterm.
	eventually(t, "the xterm in the client", 30*time.Second, func() bool {
		out, _ := exec.Command("xwininfo", "-root", "-tree", "-display", c.display).Output()
		return strings.Contains(string(out), " on tcp://newbie@127.0.0.1:")
	})
	if !c.running() {
		t.Fatalf("client exited:\n%s", tail([]byte(c.text()), 2000))
	}
	// One session is the limit: another start is refused with the reason.
	c2 := runClient(t, "start", url, "--start=xterm")
	if out := c2.exited(t, 60*time.Second); !strings.Contains(out, "too many sessions") {
		t.Errorf("second start: client said:\n%s", tail([]byte(out), 1500))
	}
}

func mustHostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
