package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
	"github.com/xpraproxy/xpraproxy/route"
)

// New sessions through the proxy (xpra's proxy_server start_new_session):
// a client hello with `start-new-session` (from `xpra start tcp://...`), or
// a user without any session, makes the proxy run `xpra start` as that
// user — in the privilege-separated worker when the proxy is root — wait
// for the display, and connect the client to it.

// StartRequest is a validated start-new-session: the mode and the xpra
// arguments the client may set.
type StartRequest struct {
	Mode    string   `json:"mode"`
	Display string   `json:"display,omitempty"`
	Args    []string `json:"args,omitempty"`
	// Xpra is the program that starts it, of the client's generation
	// (XpraPrograms.Choose); empty: "xpra" on PATH.
	Xpra string `json:"xpra,omitempty"`
}

// startModes maps each mode a client may ask for (3.1's and 6.x's names,
// MODE_ALIAS in 6.x) to the subcommand of a 3.1 xpra and of a 6.x one;
// "" where that generation has no such mode.
var startModes = map[string][2]string{
	"start":         {"start", "seamless"},
	"seamless":      {"start", "seamless"},
	"start-desktop": {"start-desktop", "desktop"},
	"desktop":       {"start-desktop", "desktop"},
	"shadow":        {"shadow", "shadow"},
	"monitor":       {"", "monitor"},
	"expand":        {"", "expand"},
	"shadow-screen": {"", "shadow-screen"},
}

// Subcommand is the xpra subcommand for mode on a program with encoders
// prog (≥ 6 when it speaks only rencodeplus), or an error naming the
// generation the mode needs.
func Subcommand(mode string, prog Encoders) (string, error) {
	m, ok := startModes[mode]
	if !ok {
		return "", fmt.Errorf("invalid start-new-session mode %q", logsafe.String(mode))
	}
	sub := m[0]
	if prog == EncRencodePlus {
		sub = m[1]
	}
	if sub == "" {
		return "", fmt.Errorf("mode %q needs an xpra >= 6 server, and this proxy starts %s sessions for your client", mode, prog.Generation())
	}
	return sub, nil
}

// startOverridable are the options a client may set for the new session
// (xpra's PROXY_START_OVERRIDABLE_OPTIONS, without auth and bind options,
// which would let a user open listeners or change authentication).
var startOverridable = []string{
	"env", "start-env", "chdir", "dpi", "encoding", "encodings", "quality", "min-quality", "speed", "min-speed",
	"compression_level", "video-scaling", "title", "session-name", "clipboard", "clipboard-direction",
	"input-method", "microphone", "speaker", "sound-source", "pulseaudio", "idle-timeout", "server-idle-timeout",
	"resize-display", "pixel-depth", "readonly", "keyboard-sync", "cursors", "bell", "notifications", "xsettings",
	"system-tray", "sharing", "lock", "windows", "webcam", "html", "terminate-children", "exit-with-children",
	"exit-with-client", "av-sync", "global-menus", "forward-xdg-open", "modal-windows", "bandwidth-detection",
	"printing", "file-transfer", "open-command", "open-files", "open-url", "start-new-commands", "mmap", "mdns",
	"bandwidth-limit", "start", "start-child", "start-after-connect", "start-child-after-connect",
	"start-on-connect", "start-child-on-connect", "start-on-last-client-exit", "start-child-on-last-client-exit",
}

// commandOptions run a command of the client's choice in the new session;
// each value must be on the proxy's allow-list (StartPolicy.Commands).
var commandOptions = []string{
	"start", "start-child", "start-after-connect", "start-child-after-connect", "start-on-connect",
	"start-child-on-connect", "start-on-last-client-exit", "start-child-on-last-client-exit", "open-command",
}

// StartPolicy is what a client may ask of a new session beyond xpra's
// harmless options: the commands it may run (compared whole; "*" allows
// any) and the environment variables it may set. The zero policy allows
// neither.
type StartPolicy struct {
	Commands, Env []string
}

func (p StartPolicy) command(c string) bool {
	return slices.Contains(p.Commands, "*") || slices.Contains(p.Commands, c)
}

// check refuses a value of an option that runs commands or sets the
// environment unless the policy allows it.
func (p StartPolicy) check(option, value string) error {
	switch {
	case slices.Contains(commandOptions, option):
		if !p.command(value) {
			return fmt.Errorf("command %q is not allowed for new sessions on this proxy (--proxy-start-commands)", logsafe.String(value))
		}
	case option == "env" || option == "start-env":
		name, _, _ := strings.Cut(value, "=")
		if !slices.Contains(p.Env, name) && !slices.Contains(p.Env, "*") {
			return fmt.Errorf("environment variable %q is not allowed for new sessions on this proxy (--proxy-start-env)", logsafe.String(name))
		}
	case option == "start-new-commands" || option == "chdir":
		// A client that may start commands later, or choose the
		// directory, needs the operator's "*".
		if value != "no" && !p.command("*") {
			return fmt.Errorf("%s is not allowed for new sessions on this proxy", option)
		}
	}
	return nil
}

// ParseStartRequest checks a hello's start-new-session dict against xpra's
// list of options a client may set and the proxy's policy for commands and
// environment variables.
func ParseStartRequest(sns frame.Dict, policy StartPolicy) (*StartRequest, []string, error) {
	r := &StartRequest{Mode: "start"}
	var ignored []string
	for _, kv := range sns {
		k, _ := frame.AsText(kv.Key)
		switch k {
		case "mode":
			r.Mode, _ = frame.AsText(kv.Value)
			continue
		case "display":
			r.Display, _ = frame.AsText(kv.Value)
			continue
		}
		if !slices.Contains(startOverridable, k) {
			ignored = append(ignored, k)
			continue
		}
		values := []any{kv.Value}
		if l, ok := kv.Value.([]any); ok {
			values = l
		}
		for _, v := range values {
			var text string
			switch x := v.(type) {
			case bool:
				text = "no"
				if x {
					text = "yes"
				}
			default:
				var ok bool
				if text, ok = frame.AsText(v); !ok {
					text = fmt.Sprint(v)
				}
			}
			if v == nil || text == "" {
				continue
			}
			if err := policy.check(k, text); err != nil {
				return nil, ignored, err
			}
			r.Args = append(r.Args, "--"+k+"="+text)
		}
	}
	if _, ok := startModes[r.Mode]; !ok {
		return nil, ignored, fmt.Errorf("invalid start-new-session mode %q", logsafe.String(r.Mode))
	}
	if r.Display != "" && !strings.HasPrefix(r.Display, ":") {
		return nil, ignored, fmt.Errorf("invalid display %q for a new session", r.Display)
	}
	return r, ignored, nil
}

// StartSession runs `xpra MODE` as the current user with its sockets in
// socketDir, waits (up to timeout) for the display it gets, and returns
// the display and its socket.
func StartSession(r *StartRequest, socketDir, hostname string, timeout time.Duration) (route.Candidate, error) {
	prog := r.Xpra
	if prog == "" {
		prog = "xpra"
	}
	xpra, err := exec.LookPath(prog)
	if err != nil {
		return route.Candidate{}, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot start a new session: " + prog + " is not installed", Err: err}
	}
	args := []string{r.Mode}
	if r.Display != "" {
		args = append(args, r.Display)
	}
	args = append(args, r.Args...)
	logFile := fmt.Sprintf("xpraproxy-start-%d-%d.log", os.Getpid(), time.Now().UnixNano())
	args = append(args, "--daemon=yes", "--systemd-run=no", "--attach=no", "--socket-dir="+socketDir, "--socket-dirs="+socketDir,
		"--log-dir="+socketDir, "--log-file="+logFile)
	// The daemon reports its own failures only in its log.
	logTail := func() string {
		b, _ := os.ReadFile(socketDir + "/" + logFile)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if l := strings.TrimSpace(lines[i]); l != "" && !strings.Contains(l, "Traceback") {
				return l
			}
		}
		return ""
	}
	var rp, wp *os.File
	if r.Display == "" {
		if rp, wp, err = os.Pipe(); err != nil {
			return route.Candidate{}, err
		}
		defer rp.Close()
		args = append(args, "--displayfd=3")
	}
	cmd := exec.Command(xpra, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if wp != nil {
		cmd.ExtraFiles = []*os.File{wp}
	}
	home, _ := os.UserHomeDir()
	cmd.Dir = home
	cmd.Env = append(os.Environ(), "XPRA_NOTTY=1")
	if d := os.Getenv("XDG_RUNTIME_DIR"); d == "" || !writable(d) {
		// xpra ≥ 5 keeps its runtime files there; a worker or a daemon
		// may have none: give it one beside the sockets.
		rt := filepath.Join(socketDir, "runtime")
		os.MkdirAll(rt, 0o700)
		cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+rt)
	}
	if err := cmd.Start(); err != nil {
		return route.Candidate{}, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot start a new session", Err: err}
	}
	if wp != nil {
		wp.Close()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	display := r.Display
	if rp != nil {
		got := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(rp).ReadString('\n')
			got <- strings.TrimSpace(line)
		}()
		select {
		case d := <-got:
			if d != "" {
				display = ":" + strings.TrimPrefix(d, ":")
			}
		case <-time.After(timeout):
		}
	}
	select {
	case err = <-done:
	case <-time.After(timeout):
		err = errors.New("xpra start did not return")
	}
	if err != nil || display == "" {
		msg := strings.TrimSpace(out.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 && len(msg) > 300 {
			msg = msg[i+1:]
		}
		if l := logTail(); l != "" {
			msg = l
		}
		return route.Candidate{}, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "failed to start a new session: " + msg, Err: err}
	}
	// The daemon returns before its server listens: wait until the
	// socket accepts a connection.
	deadline := time.Now().Add(timeout)
	for {
		path, ferr := route.FindSocket([]string{socketDir}, hostname, display)
		if ferr == nil {
			if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
				c.Close()
				return route.Candidate{Display: display, Target: route.Target{Network: "unix", Address: path, Display: display, Scheme: "socket"}}, nil
			} else {
				ferr = derr
			}
		}
		if time.Now().After(deadline) {
			msg := "it did not start listening"
			if l := logTail(); l != "" {
				msg = l
			}
			return route.Candidate{}, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "failed to start a new session: " + msg, Err: ferr}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func writable(dir string) bool { return syscall.Access(dir, 2 /* W_OK */) == nil }

// XpraPrograms are the xpra programs the proxy may run to start new
// sessions (--proxy-start-xpra, or a user row's start-xpra option), each
// of the generation its `--version` says, learnt once per program.
type XpraPrograms struct {
	// Paths in order of preference; empty: "xpra" on PATH.
	Paths []string
	mu    sync.Mutex
	known map[string]Encoders
}

// Choose picks the first of paths (p.Paths when empty) whose generation a
// client with encoders client can use, and returns it with its encoders.
// It runs each program's --version once (off the loop).
func (p *XpraPrograms) Choose(paths []string, client Encoders) (string, Encoders, error) {
	if len(paths) == 0 && p != nil {
		paths = p.Paths
	}
	if len(paths) == 0 {
		paths = []string{"xpra"}
	}
	var tried []string
	for _, path := range paths {
		enc, err := p.encoders(path)
		if err != nil {
			tried = append(tried, path+": "+err.Error())
			continue
		}
		if client.Compatible(enc) {
			return path, enc, nil
		}
		tried = append(tried, path+" is "+enc.Generation())
	}
	return "", 0, fmt.Errorf("no xpra on this proxy can start a session for your client (%s): %s", client.Generation(), strings.Join(tried, "; "))
}

func (p *XpraPrograms) encoders(path string) (Encoders, error) {
	if p != nil {
		p.mu.Lock()
		enc, ok := p.known[path]
		p.mu.Unlock()
		if ok {
			return enc, nil
		}
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("cannot run it: %w", err)
	}
	enc, err := versionEncoders(string(out))
	if err != nil {
		return 0, err
	}
	if p != nil {
		p.mu.Lock()
		if p.known == nil {
			p.known = map[string]Encoders{}
		}
		p.known[path] = enc
		p.mu.Unlock()
	}
	return enc, nil
}

// versionEncoders reads `xpra --version` ("xpra v6.5.5-r0") as the
// encoders that version speaks.
func versionEncoders(out string) (Encoders, error) {
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "xpra" {
		return 0, fmt.Errorf("unexpected --version output %q", logsafe.String(out))
	}
	major, minor, ok := versionOf(frame.NewDict("version", strings.TrimPrefix(f[1], "v")))
	switch {
	case !ok:
		return 0, fmt.Errorf("unexpected --version output %q", logsafe.String(out))
	case major >= 6:
		return EncRencodePlus, nil
	case major > 4 || (major == 4 && minor >= 3):
		return EncRencodePlus | EncRencode | EncBencode, nil
	}
	return EncRencode | EncBencode, nil
}
