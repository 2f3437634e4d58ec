package main

// Running under systemd: the listening sockets it hands over (socket
// activation, sd_listen_fds) and what the proxy tells it (sd_notify:
// readiness, status, watchdog, stopping, reloading). Both are no-ops when
// the process was not started that way. docs/service.md, "systemd".

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/xpraproxy/xpraproxy/loop"
)

// fdNameKinds are the FileDescriptorName= values that choose what an
// inherited socket accepts when no --bind-* names its address; any other
// name (systemd's default is the socket unit's name) leaves the socket
// type's default: the one-port kind for tcp, xpra for unix.
var fdNameKinds = map[string]string{"tcp": "tcp", "ws": "ws", "ssl": "ssl", "wss": "wss", "ssh": "ssh", "unix": "unix"}

// activated is what the service manager handed over.
type activated struct {
	n         int      // sockets served
	notes     []string // what was ignored or overridden, logged once the log is open
	inherited []bind   // the sockets, as binds of their own (a reload matches them again)
}

// inheritSockets takes the listening sockets passed with LISTEN_PID /
// LISTEN_FDS / LISTEN_FDNAMES (the variables are removed, so that no child
// sees them) and makes each a bind of o: a socket whose address is that of
// a --bind-tcp/--bind-unix (or --bind-ws, ...) takes that bind's kind and
// auth options and the bind is not bound again; any other becomes a bind
// of its own, of the kind its FileDescriptorName names or its socket
// type's default, with the default auth of its kind (--tcp-auth,
// --unix-auth, --auth, as a bind without auth= gets). Sockets that are not
// listening stream sockets are closed and noted. Nothing happens without
// activation. handed are more sockets to adopt the same way (an
// upgrade's predecessor's, named by kind).
func inheritSockets(o *proxyOptions, handed []*os.File) (*activated, error) {
	return adoptSockets(o, append(activation.Files(true), handed...))
}

// adoptSockets is inheritSockets with the files at hand; it closes them
// (a listener keeps its own copy of each).
func adoptSockets(o *proxyOptions, files []*os.File) (*activated, error) {
	act := &activated{}
	if len(files) == 0 {
		return act, nil
	}
	var inherited []bind
	for _, f := range files {
		// FileListener dups the descriptor; the original is closed so
		// that only the copy (close-on-exec, like every fd Go makes)
		// stays open: no worker or started session inherits it.
		ln, err := net.FileListener(f)
		name := f.Name()
		f.Close()
		if err != nil {
			act.notes = append(act.notes, fmt.Sprintf("inherited socket %q is not a listening stream socket; closed: %v", name, err))
			continue
		}
		b := bind{network: ln.Addr().Network(), address: ln.Addr().String(), ln: ln}
		switch b.network {
		case "tcp":
			b.kind = "tcp"
		case "unix":
			b.kind = "unix"
		default:
			ln.Close()
			act.notes = append(act.notes, fmt.Sprintf("inherited socket %q is a %s socket; closed", name, b.network))
			continue
		}
		if k, ok := fdNameKinds[name]; ok {
			if (k == "unix") != (b.network == "unix") {
				act.notes = append(act.notes, fmt.Sprintf("inherited %s socket %s: FileDescriptorName=%s does not fit it; serving it as %s",
					b.network, b.address, name, b.kind))
			} else {
				b.kind = k
			}
		}
		inherited = append(inherited, b)
	}
	act.inherited = inherited
	act.bindTo(o)
	act.n = len(inherited)
	if act.n == 0 {
		return act, fmt.Errorf("socket activation: none of the %d inherited sockets is a listening tcp or unix stream socket", len(files))
	}
	return act, nil
}

// bindTo makes the inherited sockets binds of o: at start, and again for
// the options a reload read, so that systemd's sockets keep serving
// whatever the new configuration says of them.
func (act *activated) bindTo(o *proxyOptions) {
	if act == nil || len(act.inherited) == 0 {
		return
	}
	inherited := act.inherited
	var binds []bind
	taken := make([]bool, len(inherited))
	for _, cmdline := range o.binds {
		matched := false
		for i := range inherited {
			in := &inherited[i]
			if taken[i] || !sameAddress(cmdline, in.network, in.address) {
				continue
			}
			if in.kind != in.network && in.kind != cmdline.kind {
				act.notes = append(act.notes, fmt.Sprintf("inherited socket %s is --bind-%s=%s: FileDescriptorName=%s ignored",
					in.address, cmdline.kind, cmdline.address, in.kind))
			}
			b := cmdline
			b.ln, b.address = in.ln, in.address
			binds = append(binds, b)
			taken[i], matched = true, true
		}
		if !matched {
			binds = append(binds, cmdline)
		}
	}
	for i, in := range inherited {
		if !taken[i] {
			binds = append(binds, in)
		}
	}
	o.binds = binds
}

// sameAddress: is the bind b the address of an inherited socket? A
// wildcard host matches either wildcard ([::]:14500 is what
// ListenStream=14500 makes, 0.0.0.0:14500 what --bind-tcp=*:14500 says);
// unix paths are compared once cleaned and with their directory's
// symlinks resolved (/var/run is /run).
func sameAddress(b bind, network, address string) bool {
	if b.network != network {
		return false
	}
	if network == "unix" {
		return realSocketPath(b.address) == realSocketPath(address)
	}
	host, port, err := net.SplitHostPort(b.address)
	ihost, iport, err2 := net.SplitHostPort(address)
	if err != nil || err2 != nil || port != iport {
		return false
	}
	iip := net.ParseIP(ihost)
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		ips, _ = net.LookupIP(host) // a name: --bind-tcp=localhost:14500
	}
	for _, ip := range ips {
		if ip.Equal(iip) || (ip.IsUnspecified() && iip != nil && iip.IsUnspecified()) {
			return true
		}
	}
	return false
}

func realSocketPath(p string) string {
	p = filepath.Clean(p)
	if dir, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
		return filepath.Join(dir, filepath.Base(p))
	}
	return p
}

// log writes what inheritSockets noted.
func (a *activated) log(log *slog.Logger) {
	if a.n > 0 {
		log.Info("socket activation: serving the sockets the service manager passed", "sockets", a.n)
	}
	for _, n := range a.notes {
		log.Warn(n)
	}
}

// underServiceManager: was the proxy started by systemd (or something
// speaking its protocol)? Then it stays in the foreground whatever
// --daemon says: a daemonized child is not the main process systemd
// watches, and the sockets are this process's.
func underServiceManager(act *activated) bool {
	return act.n > 0 || os.Getenv("NOTIFY_SOCKET") != ""
}

// keepForeground turns --daemon off under a service manager.
func (a *activated) keepForeground(o *proxyOptions) {
	if o.daemon && underServiceManager(a) {
		o.daemon = false
		a.notes = append(a.notes, "started by a service manager: --daemon=yes ignored, staying in the foreground")
	}
}

// statusEvery is how often STATUS= is refreshed.
const statusEvery = 5 * time.Second

// notifier sends sd_notify(3) states to the service manager over
// NOTIFY_SOCKET (daemon.SdNotify). A nil *notifier — what newNotifier
// returns without NOTIFY_SOCKET — does nothing, so callers need no check.
// Every method is safe from any goroutine: each state is one datagram.
type notifier struct {
	log      *slog.Logger
	watchdog time.Duration // WATCHDOG_USEC when it names this process; 0: not asked
	stopping sync.Once
	stopped  atomic.Bool // STOPPING=1 sent: the status refresh stops too
}

// newNotifier is the notifier of this process, nil when NOTIFY_SOCKET is
// unset. WATCHDOG_USEC/WATCHDOG_PID are read and removed from the
// environment (no child is watched); NOTIFY_SOCKET stays, as each state
// reads it: with NotifyAccess=main whatever a child sends there is
// ignored by systemd.
func newNotifier(log *slog.Logger) *notifier {
	wd, err := daemon.SdWatchdogEnabled(true)
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	if err != nil {
		log.Warn("systemd watchdog: ignoring WATCHDOG_USEC", "err", err)
	}
	return &notifier{log: log, watchdog: wd}
}

func (n *notifier) send(state string) {
	if n == nil {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("cannot notify the service manager", "state", state, "err", err)
	}
}

// Ready tells the service manager the proxy serves (startup done, or a
// reload finished), with its main pid and status line.
func (n *notifier) Ready(status string) {
	n.send(daemon.SdNotifyReady + "\nMAINPID=" + strconv.Itoa(os.Getpid()) + "\nSTATUS=" + status)
}

// Reloading says a reload has begun; Ready ends it. systemd ≥ 253
// (Type=notify-reload) wants MONOTONIC_USEC with it to match the two.
func (n *notifier) Reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading")
}

// Stopping says the proxy is shutting down (SIGTERM, SIGINT, a stop
// request).
func (n *notifier) Stopping() {
	if n == nil {
		return
	}
	n.stopping.Do(func() {
		n.stopped.Store(true)
		n.send(daemon.SdNotifyStopping + "\nSTATUS=stopping: disconnecting the sessions")
	})
}

// MainPID hands the service to another process (an upgrade's successor):
// systemd then watches that one, and this one's exit ends nothing.
func (n *notifier) MainPID(pid int) {
	n.send("MAINPID=" + strconv.Itoa(pid) + "\nSTATUS=upgraded: process " + strconv.Itoa(pid) + " serves, " +
		strconv.Itoa(os.Getpid()) + " drains its sessions")
}

// Status replaces the one-line status `systemctl status` shows.
func (n *notifier) Status(status string) { n.send("STATUS=" + status) }

// serve sends READY=1 once srv serves every listener, then refreshes the
// status every statusEvery and, when the service manager asked, pets the
// watchdog at half its interval, until done is closed. The watchdog has a
// goroutine of its own: a status that waits on a slow worker must not
// starve it. WATCHDOG=1 shows that the process runs and is scheduled;
// it does not probe the event loops.
func (n *notifier) serve(srv *loop.Server, status func() string, done <-chan struct{}) {
	if n == nil {
		return
	}
	if n.watchdog > 0 {
		go func() {
			t := time.NewTicker(n.watchdog / 2)
			defer t.Stop()
			for {
				n.send(daemon.SdNotifyWatchdog)
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		}()
	}
	select {
	case <-srv.Ready():
	case <-done:
		return
	}
	n.Ready(status())
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if !n.stopped.Load() {
				n.Status(status())
			}
		}
	}
}

// serviceStatus is the STATUS= line: sessions and connections, and the
// workers as root (asking each worker for its counters, off the loops).
func (c *control) serviceStatus() string {
	k := c.srv.Counters()
	s := fmt.Sprintf("sessions=%d connections=%d logging-in=%d", k.Sessions, k.Connections, k.LoggingIn)
	if c.sup != nil {
		wc, n := c.sup.Counters()
		s = fmt.Sprintf("sessions=%d connections=%d logging-in=%d workers=%d", k.Sessions+wc.Sessions, k.Connections, k.LoggingIn, n)
	}
	return s
}
