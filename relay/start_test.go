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
		"start", []any{"xterm", "xclock"}, "sharing", true, "bind-tcp", "0.0.0.0:1", "auth", "allow", "dpi", 96))
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
		if _, _, err := ParseStartRequest(bad); err == nil {
			t.Errorf("accepted %v", bad)
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
