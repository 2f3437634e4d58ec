package relay

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
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
	if r, _, err := ParseStartRequest(frame.NewDict("mode", "seamless"), StartPolicy{}); err != nil || r.Mode != "seamless" {
		t.Errorf("6.x seamless: %+v %v", r, err)
	}
}

// Each mode becomes the subcommand of the generation that starts it;
// 6.x-only modes are refused with the reason for a 3.1 xpra.
func TestSubcommand(t *testing.T) {
	three, six := EncRencode|EncBencode, EncRencodePlus
	for _, c := range []struct {
		mode      string
		enc       Encoders
		want, err string
	}{
		{"start", three, "start", ""}, {"seamless", three, "start", ""}, {"desktop", three, "start-desktop", ""},
		{"start", six, "seamless", ""}, {"start-desktop", six, "desktop", ""}, {"monitor", six, "monitor", ""},
		{"shadow-screen", six, "shadow-screen", ""}, {"expand", three, "", "needs an xpra >= 6 server"},
		{"upgrade", six, "", "invalid"},
	} {
		got, err := Subcommand(c.mode, c.enc)
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s on %v: %q %v", c.mode, c.enc, got, err)
		}
	}
	for out, want := range map[string]Encoders{"xpra v6.5.5-r0\n": six, "xpra v3.1.3-r0\n": three, "xpra v5.0.9": six | three} {
		if got, err := versionEncoders(out); err != nil || got != want {
			t.Errorf("versionEncoders(%q) = %v %v", out, got, err)
		}
	}
	if _, err := versionEncoders("Python 3.11"); err == nil {
		t.Error("accepted a version line that is not xpra's")
	}
}

// Choose picks the program of the client's generation and says why when
// there is none.
func TestXpraProgramsChoose(t *testing.T) {
	dir := t.TempDir()
	write := func(name, version string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("#!/bin/sh\necho 'xpra v"+version+"'\n"), 0o755)
		return p
	}
	old, six := write("xpra3", "3.1.3-r0"), write("xpra6", "6.5.5-r0")
	progs := &XpraPrograms{Paths: []string{old, six}}
	if p, _, err := progs.Choose(nil, EncRencodePlus); p != six || err != nil {
		t.Errorf("6.x client got %q %v", p, err)
	}
	if p, _, err := progs.Choose(nil, EncRencode|EncBencode); p != old || err != nil {
		t.Errorf("3.1 client got %q %v", p, err)
	}
	if _, _, err := progs.Choose([]string{old}, EncRencodePlus); err == nil || !strings.Contains(err.Error(), "xpra < 4.3") {
		t.Errorf("a row with only a 3.1 xpra for a 6.x client: %v", err)
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
	be, ok := disconnect.Is(err, disconnect.Backend)
	if !ok || !strings.HasPrefix(be.Message, "failed to start a new session: ") || len(be.Message) < 40 {
		t.Errorf("got %v", err)
	}
	t.Logf("reason given: %s", be.Message)
}
