package relay

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
)

func TestParseStartRequest(t *testing.T) {
	r, ignored, err := ParseStartRequest(frame.NewDict("mode", "start-desktop", "display", ":55",
		"start", []any{"xterm", "xclock"}, "sharing", true, "bind-tcp", "0.0.0.0:1", "auth", "allow", "dpi", 96),
		StartPolicy{Commands: []string{"xterm", "xclock"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != "start-desktop" || r.Display != ":55" ||
		strings.Join(r.Args, " ") != "--start=xterm --start=xclock --sharing=yes --dpi=96" {
		t.Errorf("request: %+v", r)
	}
	if strings.Join(ignored, ",") != "bind-tcp,auth" {
		t.Errorf("a client must not set listeners or authentication; ignored %v", ignored)
	}
	for _, bad := range []frame.Dict{frame.NewDict("mode", "rm -rf"), frame.NewDict("display", "tcp://x")} {
		if _, _, err := ParseStartRequest(bad, StartPolicy{Commands: []string{"*"}}); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
	if r, _, err := ParseStartRequest(frame.NewDict("mode", "seamless"), StartPolicy{}); err != nil || r.Mode != "start" {
		t.Errorf("6.x seamless: %+v %v", r, err)
	}
}

// The default policy lets a client choose no command and no environment;
// the operator's allow-lists open exactly what they name.
func TestStartPolicy(t *testing.T) {
	xterm := StartPolicy{Commands: []string{"xterm"}, Env: []string{"LANG"}}
	for _, tc := range []struct {
		policy StartPolicy
		sns    frame.Dict
		ok     bool
	}{
		{StartPolicy{}, frame.NewDict("start", "xterm"), false},
		{StartPolicy{}, frame.NewDict("start-child", "touch /tmp/pwned"), false},
		{StartPolicy{}, frame.NewDict("env", []any{"LD_PRELOAD=/tmp/x.so"}), false},
		{StartPolicy{}, frame.NewDict("start-new-commands", true), false},
		{StartPolicy{}, frame.NewDict("start-new-commands", false, "dpi", 96), true},
		{xterm, frame.NewDict("start", "xterm"), true},
		{xterm, frame.NewDict("start", "xterm -e sh -c 'touch /tmp/x'"), false},
		{xterm, frame.NewDict("start-on-connect", "touch /tmp/x"), false},
		{xterm, frame.NewDict("env", "LANG=C.UTF-8"), true},
		{xterm, frame.NewDict("start-env", "PATH=/tmp"), false},
		{StartPolicy{Commands: []string{"*"}}, frame.NewDict("start", "anything", "chdir", "/tmp"), true},
	} {
		_, _, err := ParseStartRequest(tc.sns, tc.policy)
		if (err == nil) != tc.ok {
			t.Errorf("%+v with %v: err = %v, want ok=%v", tc.policy, tc.sns, err, tc.ok)
		}
	}
}

func TestStartSessionWithoutXpra(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := StartSession(&StartRequest{Mode: "start"}, t.TempDir(), "host", time.Second)
	if err == nil || !strings.Contains(err.Error(), "xpra is not installed") {
		t.Errorf("got %v", err)
	}
}

// A start that fails (shadowing a display that does not exist) reaches the
// client as a reason with xpra's own words.
func TestStartSessionFailure(t *testing.T) {
	if _, err := exec.LookPath("xpra"); err != nil {
		t.Fatalf("xpra is missing: the README's test command installs it")
	}
	_, err := StartSession(&StartRequest{Mode: "shadow", Display: ":59999"}, t.TempDir(), "host", 5*time.Second)
	var be *BackendError
	if !errors.As(err, &be) || !strings.HasPrefix(be.Message, "failed to start a new session: ") || len(be.Message) < 40 {
		t.Errorf("got %v", err)
	}
	t.Logf("reason given: %s", be.Message)
}
