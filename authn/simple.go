package authn

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// localModule is shared by the modules that expose the user's local
// sessions: uid= and gid= options override the account's ids.
type localModule struct {
	name     string
	uid, gid string
}

func (m localModule) Name() string { return m.name }

func (m localModule) identity(user string) *Identity {
	return &Identity{Username: user, UID: m.uid, GID: m.gid}
}

func newLocal(spec Spec, extra ...string) (localModule, error) {
	if err := spec.CheckOptions(append(extra, "uid", "gid")...); err != nil {
		return localModule{}, err
	}
	return localModule{name: spec.Name, uid: spec.Options["uid"], gid: spec.Options["gid"]}, nil
}

// allow sends a challenge and accepts any answer (xpra's allow module:
// "does no checking whatsoever").
type allow struct{ localModule }

func newAllow(spec Spec, _ Env) (Module, error) {
	m, err := newLocal(spec)
	return allow{m}, err
}
func (allow) Challenge() bool { return true }
func (m allow) Authenticate(r Request) (*Identity, error) {
	return m.identity(r.Username), nil
}

// none sends no challenge and accepts everyone.
type none struct{ localModule }

func newNone(spec Spec, _ Env) (Module, error) {
	m, err := newLocal(spec)
	return none{m}, err
}
func (none) Challenge() bool { return false }
func (m none) Authenticate(r Request) (*Identity, error) {
	return m.identity(r.Username), nil
}

// reject sends a challenge and always fails.
type reject struct{ localModule }

func newReject(spec Spec, _ Env) (Module, error) {
	m, err := newLocal(spec)
	return reject{m}, err
}
func (reject) Challenge() bool                         { return true }
func (reject) Authenticate(Request) (*Identity, error) { return nil, ErrAuthFailed }

// newFail is xpra's fail module: it cannot be instantiated, which makes
// every connection that uses it fail with this message.
func newFail(spec Spec, _ Env) (Module, error) {
	return failing{spec.Name}, nil
}

type failing struct{ name string }

func (f failing) Name() string  { return f.name }
func (failing) Challenge() bool { return false }
func (failing) Authenticate(Request) (*Identity, error) {
	return nil, fmt.Errorf("authn: the 'fail' authentication module always fails")
}

// passwordModule checks the challenge response against one password that
// get returns (value=, an environment variable or a file).
type passwordModule struct {
	localModule
	get func() ([]byte, error)
}

func (passwordModule) Challenge() bool { return true }

func (m passwordModule) Authenticate(r Request) (*Identity, error) {
	pw, err := m.get()
	if err != nil {
		return nil, err
	}
	if len(pw) == 0 || r.Verify == nil || !r.Verify(pw) {
		return nil, ErrAuthFailed
	}
	return m.identity(r.Username), nil
}

func newPassword(spec Spec, _ Env) (Module, error) {
	m, err := newLocal(spec, "value")
	if err != nil {
		return nil, err
	}
	v, ok := spec.Options["value"]
	if !ok {
		return nil, fmt.Errorf("authn: the password module needs value=")
	}
	return passwordModule{m, func() ([]byte, error) { return []byte(v), nil }}, nil
}

func newEnvModule(spec Spec, env Env) (Module, error) {
	m, err := newLocal(spec, "name")
	if err != nil {
		return nil, err
	}
	name := spec.Options["name"]
	if name == "" {
		name = "XPRA_PASSWORD"
	}
	getenv := env.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	return passwordModule{m, func() ([]byte, error) {
		v := getenv(name)
		if v == "" {
			return nil, fmt.Errorf("authn: env module: %s is not set", name)
		}
		return []byte(v), nil
	}}, nil
}

// Resolve makes a module's relative filename relative to Dir, as xpra's
// exec_cwd does.
func (env Env) Resolve(name string) string {
	if name == "" || filepath.IsAbs(name) || env.Dir == "" {
		return name
	}
	return filepath.Join(env.Dir, name)
}

// newFile: the whole content of filename is the password, re-read when
// the file changes (xpra warns about, but keeps, a trailing newline).
func newFile(spec Spec, env Env) (Module, error) {
	m, err := newLocal(spec, "filename")
	if err != nil {
		return nil, err
	}
	path := env.Resolve(spec.Options["filename"])
	if path == "" {
		return nil, fmt.Errorf("authn: the file module needs filename=")
	}
	return passwordModule{m, func() ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("authn: file module: %w", err)
		}
		return b, nil
	}}, nil
}

// execModule runs command with "Connection request from <peer>" and a
// timeout; exit status 0 allows the connection. No challenge is sent.
type execModule struct {
	localModule
	command string
	timeout time.Duration
}

func newExec(spec Spec, env Env) (Module, error) {
	m, err := newLocal(spec, "command", "timeout")
	if err != nil {
		return nil, err
	}
	cmd := env.Resolve(spec.Options["command"])
	if cmd == "" {
		return nil, fmt.Errorf("authn: the exec module needs command=")
	}
	timeout := 600 * time.Second
	if t := spec.Options["timeout"]; t != "" {
		secs, err := strconv.Atoi(t)
		if err != nil || secs <= 0 {
			return nil, fmt.Errorf("authn: exec module: invalid timeout %q", t)
		}
		timeout = time.Duration(secs) * time.Second
	}
	return execModule{m, cmd, timeout}, nil
}

func (execModule) Challenge() bool { return false }

func (m execModule) Authenticate(r Request) (*Identity, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.command, "Connection request from "+r.Peer, strconv.Itoa(int(m.timeout.Seconds())))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: exec command timed out", ErrAuthFailed)
		}
		if _, ok := err.(*exec.ExitError); ok {
			return nil, ErrAuthFailed
		}
		return nil, fmt.Errorf("authn: exec module: %w", err)
	}
	return m.identity(r.Username), nil
}
