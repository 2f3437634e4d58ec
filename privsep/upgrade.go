package privsep

// The upgrade's conduit (docs/upgrade.md): the running proxy starts its
// successor with one end of a socketpair, hands it the listening sockets
// over SCM_RIGHTS, and waits until the successor serves or fails.

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// UpgradeEnv names the conduit's descriptor in a process an upgrade
// started.
const UpgradeEnv = "XPRAPROXY_UPGRADE"

// Socket is a listening socket handed to the successor.
type Socket struct {
	Network, Address string
	Kind             string   // what it accepts (loop.Listener's Kind)
	File             *os.File // the caller's; StartUpgrade does not close it
}

// Key is how both sides name a socket.
func (s Socket) Key() string { return s.Network + "://" + s.Address }

// Upgrade is a successor that is serving.
type Upgrade struct {
	PID    int
	exited chan error // its exit status, once it exits (it is reaped)
	ch     *channel   // the conduit, open until Close: live sessions go over it
}

// Exited delivers the successor's exit status if it exits while this
// process still runs (it is reaped).
func (u *Upgrade) Exited() <-chan error { return u.exited }

// StartUpgrade starts exe with args and env (XPRAPROXY_UPGRADE added),
// hands it socks and waits until it says it serves. On any failure (it
// cannot start, exits, says why, or is not ready within timeout) it is
// killed and reaped, and the error carries its reason.
func StartUpgrade(exe string, args, env []string, socks []Socket, stderr io.Writer, timeout time.Duration) (*Upgrade, error) {
	ch, child, err := socketpair()
	if err != nil {
		return nil, err
	}
	kept := false
	defer func() {
		if !kept {
			ch.close()
		}
	}()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(env, UpgradeEnv+"=3")
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		child.Close()
		return nil, fmt.Errorf("upgrade: start %s: %w", exe, err)
	}
	child.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// fail ends the successor; when it ended by itself first, its exit
	// is the reason.
	fail := func(err error) (*Upgrade, error) {
		select {
		case status := <-exited:
			return nil, fmt.Errorf("upgrade: the new process exited before it served (%v)", status)
		case <-time.After(time.Second):
		}
		cmd.Process.Kill()
		<-exited
		return nil, err
	}
	for _, s := range socks {
		if err := ch.send(&message{Op: "listener", Network: s.Network, Address: s.Address, Kind: s.Kind}, s.File); err != nil {
			return fail(fmt.Errorf("upgrade: hand over %s: %w", s.Key(), err))
		}
	}
	if err := ch.send(&message{Op: "listeners"}, nil); err != nil {
		return fail(fmt.Errorf("upgrade: %w", err))
	}
	answer := make(chan *message, 1)
	go func() {
		m, f, err := ch.recv()
		if f != nil {
			f.Close()
		}
		if err != nil {
			m = &message{Op: "lost"}
		}
		answer <- m
	}()
	select {
	case m := <-answer:
		switch m.Op {
		case "ready":
			kept = true
			return &Upgrade{PID: cmd.Process.Pid, exited: exited, ch: ch}, nil
		case "failed":
			return fail(fmt.Errorf("upgrade: the new process cannot serve: %s", m.Err))
		}
		return fail(fmt.Errorf("upgrade: the new process closed the conduit before it served"))
	case status := <-exited:
		return nil, fmt.Errorf("upgrade: the new process exited before it served (%v)", status)
	case <-time.After(timeout):
		return fail(fmt.Errorf("upgrade: the new process did not serve within %s", timeout))
	}
}

// Successor is the new process's side of an upgrade.
type Successor struct {
	ch    *channel
	files []*os.File
}

// maxHandedSockets bounds what a predecessor can make us hold.
const maxHandedSockets = 4096

// AdoptUpgrade is nil when this process was not started by an upgrade;
// else it reads the sockets its predecessor hands over.
func AdoptUpgrade(getenv func(string) string) (*Successor, error) {
	v := getenv(UpgradeEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(UpgradeEnv) // not for the workers and commands it starts
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("upgrade: %s=%q is not a descriptor", UpgradeEnv, v)
	}
	ch, err := fileChannel(os.NewFile(uintptr(fd), "upgrade"))
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	s := &Successor{ch: ch}
	for {
		m, f, err := ch.recv()
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("upgrade: reading the sockets: %w", err)
		}
		if m.Op == "listeners" {
			if f != nil {
				f.Close()
			}
			return s, nil
		}
		if m.Op != "listener" || f == nil || len(s.files) >= maxHandedSockets {
			if f != nil {
				f.Close()
			}
			s.closeAll()
			return nil, fmt.Errorf("upgrade: unexpected %q from the old process", m.Op)
		}
		// Named by kind, as systemd names a socket by FileDescriptorName:
		// the new process adopts both the same way.
		named, err := renamed(f, m.Kind)
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("upgrade: %s://%s: %w", m.Network, m.Address, err)
		}
		s.files = append(s.files, named)
	}
}

// renamed is f under another name (a dup; f is closed).
func renamed(f *os.File, name string) (*os.File, error) {
	defer f.Close()
	var fd int
	err := withFd(f, func(raw int) (err error) {
		fd, err = unix.FcntlInt(uintptr(raw), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Files are the handed sockets, each named by its kind; the caller owns
// them. Once only.
func (s *Successor) Files() []*os.File {
	if s == nil {
		return nil
	}
	f := s.files
	s.files = nil
	return f
}

func (s *Successor) closeAll() {
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
}

// Ready tells the old process that this one serves; the conduit stays
// open for the sessions it hands over (TakeSessions).
func (s *Successor) Ready() error {
	s.closeAll()
	return s.ch.send(&message{Op: "ready", PID: os.Getpid()}, nil)
}

// Fail tells the old process why this one will not serve.
func (s *Successor) Fail(err error) {
	s.closeAll()
	s.ch.send(&message{Op: "failed", Err: err.Error()}, nil)
	s.ch.close()
}
