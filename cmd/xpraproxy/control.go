package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/privsep"
	"github.com/xpraproxy/xpraproxy/registry"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// control is the proxy's relay.Control: the in-process loops, and the
// workers when running as root.
type control struct {
	display string
	limits  relay.Limits
	srv     *loop.Server
	sup     *privsep.Supervisor // nil unless root
	quic    quicFronts          // the --bind-quic listeners (quic.go)
	reg     *registry.Registry  // nil without --session-registry
	pools   route.Pools
	log     *slog.Logger
	once    sync.Once

	// What a reload (reload.go) starts from: the arguments the proxy was
	// started with, the sessions' config before any listener's modules,
	// and the proxy's own socket.
	args      []string
	opts      *proxyOptions
	base      relay.Config
	sockDir   string
	hostname  string
	templates []string // the socket dirs workers expand for their account
	reloadMu  sync.Mutex
	// mu guards what a reload replaces and other goroutines read: base,
	// limits, opts and the pools.
	mu           sync.Mutex
	poolSpecs    map[string]string
	retiredPools []*route.Pool
	stopProbes   chan struct{}

	upgrading atomic.Bool // an upgrade started (upgrade.go)
	sd        *notifier   // the service manager; nil (and silent) without one
	act       *activated  // the sockets systemd passed, for reloads
}

func (c *control) Info() frame.Dict {
	d := relay.ProcessInfo()
	d.Set("display", c.display)
	d.Set("session-type", "xpraproxy")
	c.mu.Lock()
	limits := c.limits
	c.mu.Unlock()
	d.Set("limits", limits.Info())
	// Live heap figures (the load benchmarks read them): collect first.
	// This runs off the loops, for the local control socket only.
	runtime.GC()
	d.Set("server", c.srv.Stats())
	sessions := c.srv.SessionsInfo()
	if c.sup != nil {
		sessions = append(sessions, c.sup.Sessions()...)
		d.Set("workers", c.sup.Workers())
	}
	d.Set("sessions", sessions)
	if pools := c.currentPools(); len(pools) > 0 {
		d.Set("pools", poolsInfo(pools))
	}
	if c.reg != nil {
		d.Set("fleet", fleetInfo(c.reg))
	}
	return d
}

func (c *control) SessionInfo(id uint64) (frame.Dict, bool) {
	if c.sup != nil {
		if d, ok := c.sup.SessionInfo(id); ok {
			return d, true
		}
	}
	return c.srv.SessionInfo(id)
}

func (c *control) StopSession(id uint64) bool {
	if c.sup != nil && c.sup.StopSession(id) {
		return true
	}
	return c.srv.StopSession(id)
}

// Shutdown stops the proxy: clients are told "server shutdown", then the
// loops and the workers stop. It returns at once (it is called on a loop).
func (c *control) Shutdown() {
	c.once.Do(func() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if c.sup != nil {
				c.sup.Close(5 * time.Second)
			}
			if err := c.srv.Shutdown(ctx, "proxy server stopped"); err != nil {
				c.log.Warn("stopping", "err", err)
			}
		}()
	})
}

// poolsInfo is what info shows of the target pools: each member's
// liveness and the sessions the main process counts on it (as root, as
// its workers report them), members in their configured order.
func poolsInfo(pools route.Pools) frame.Dict {
	d := frame.NewDict()
	names := make([]string, 0, len(pools))
	for n := range pools {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := pools[n]
		st := p.Status()
		members := frame.NewDict()
		for i, disp := range p.Displays() {
			members.Set(strconv.Itoa(i), frame.NewDict("target", route.RedactDisplay(disp), "live", st[disp][0] == 1, "sessions", st[disp][1]))
		}
		d.Set(n, frame.NewDict("policy", p.Policy, "members", members))
	}
	return d
}

// sweepWorkers retires idle workers until the proxy stops.
func (c *control) sweepWorkers(idle time.Duration) {
	t := time.NewTicker(max(idle/4, time.Second))
	defer t.Stop()
	for now := range t.C {
		c.sup.Sweep(now)
	}
}

// controlMain is `xpraproxy info|stop|list`: xpra's commands against the
// proxy's own socket, plus :proxy-ID for one relayed connection.
func controlMain(cmd string, args []string, stdout, stderr io.Writer) int {
	var dirs []string
	var target, registryURI string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case strings.HasPrefix(a, "--") && name == "registry" && cmd == "stop":
			if !hasVal && i+1 < len(args) {
				i++
				val = args[i]
			}
			registryURI = val
		case strings.HasPrefix(a, "--") && (name == "socket-dir" || name == "socket-dirs"):
			if !hasVal && i+1 < len(args) {
				i++
				val = args[i]
			}
			dirs = append(dirs, strings.FieldsFunc(val, func(r rune) bool { return r == ',' || r == ':' })...)
		case !strings.HasPrefix(a, "-") && target == "" && cmd != "list":
			target = a
		default:
			fmt.Fprintf(stderr, "xpraproxy %s: unexpected argument %q\n", cmd, a)
			return 2
		}
	}
	if registryURI != "" {
		// A session anywhere in the fleet: INSTANCE/ID from `xpraproxy sessions`.
		return registryStop(target, registryURI, stdout, stderr)
	}
	if len(dirs) == 0 {
		dirs = defaultSocketDirs()
	}
	me, _ := user.Current()
	for i := range dirs {
		dirs[i] = route.ExpandDir(dirs[i], me)
	}
	sockets := findSockets(dirs)
	if cmd == "list" {
		return listSockets(sockets, stdout)
	}
	caps := frame.NewDict("version", relay.XpraVersion, "request", cmd)
	if cmd != "reload" && cmd != "upgrade" {
		caps.Set(cmd+"_request", true) // xpra 3.1's form
	}
	instance := ""
	if strings.HasPrefix(strings.TrimPrefix(target, ":"), "proxy-") && !strings.HasPrefix(strings.TrimPrefix(target, ":"), "proxy-worker-") {
		instance = strings.TrimPrefix(target, ":")
		caps.Set("proxy-instance", instance)
		target = ""
	}
	var candidates []string
	for _, s := range sockets {
		if s.live && (target == "" || s.display == ":"+strings.TrimPrefix(target, ":")) {
			if instance == "" || s.proxy {
				candidates = append(candidates, s.path)
			}
		}
	}
	if len(candidates) == 0 {
		fmt.Fprintf(stderr, "xpraproxy %s: no live proxy socket found in %s\n", cmd, strings.Join(dirs, ", "))
		return 1
	}
	if instance == "" && target == "" && len(candidates) > 1 {
		fmt.Fprintf(stderr, "xpraproxy %s: more than one session; name one of: %s\n", cmd, displaysOf(sockets))
		return 1
	}
	var lastErr error
	for _, path := range candidates {
		reply, err := request(path, caps, cmd == "stop" && instance == "")
		if err != nil {
			lastErr = err
			continue
		}
		switch {
		case cmd == "info":
			printInfo(stdout, "", reply)
		case cmd == "reload" || cmd == "upgrade":
			done := strings.TrimSuffix(cmd, "e") + "ed"
			what, _ := reply.Text(done)
			fmt.Fprintf(stdout, "%s the proxy at %s: %s\n", done, path, what)
		case instance != "":
			fmt.Fprintf(stdout, "stopped proxy instance %s\n", instance)
		default:
			fmt.Fprintf(stdout, "stopped the proxy at %s\n", path)
		}
		return 0
	}
	fmt.Fprintf(stderr, "xpraproxy %s: %v\n", cmd, lastErr)
	return 1
}

type sockInfo struct {
	path, display string
	live, proxy   bool
}

// findSockets lists $HOSTNAME-* sockets as `xpra list` does, probing
// each: live or dead, and whether it is an xpraproxy.
func findSockets(dirs []string) []sockInfo {
	prefix := route.SocketHostname() + "-"
	var out []sockInfo
	seen := map[string]bool{}
	for _, d := range dirs {
		matches, _ := filepath.Glob(filepath.Join(d, prefix+"*"))
		sort.Strings(matches)
		for _, m := range matches {
			real, _ := filepath.EvalSymlinks(m)
			if fi, err := os.Stat(m); err != nil || fi.Mode()&os.ModeSocket == 0 || seen[real] {
				continue
			}
			seen[real] = true
			si := sockInfo{path: m, display: ":" + strings.TrimPrefix(filepath.Base(m), prefix)}
			if reply, err := request(m, frame.NewDict("version", relay.XpraVersion, "request", "id", "id_request", true), false); err == nil {
				si.live = true
				t, _ := reply.Text("session-type")
				si.proxy = t == "xpraproxy"
			} else {
				var de *disconnectError
				si.live = errors.As(err, &de)
			}
			out = append(out, si)
		}
	}
	return out
}

func displaysOf(ss []sockInfo) string {
	var out []string
	for _, s := range ss {
		if s.live {
			out = append(out, s.display)
		}
	}
	return strings.Join(out, " ")
}

func listSockets(ss []sockInfo, w io.Writer) int {
	if len(ss) == 0 {
		fmt.Fprintln(w, "No xpra sessions found")
		return 0
	}
	fmt.Fprintln(w, "Found the following xpra sessions:")
	dir := ""
	for _, s := range ss {
		if d := filepath.Dir(s.path); d != dir {
			dir = d
			fmt.Fprintf(w, "%s:\n", dir)
		}
		state := "DEAD"
		if s.live {
			state = "LIVE"
		}
		kind := "session"
		if s.proxy {
			kind = "xpraproxy"
		}
		fmt.Fprintf(w, "\t%s %s at %s\n", state, kind, s.display)
		if !s.proxy || strings.Contains(s.display, "proxy-worker-") {
			continue
		}
		info, err := request(s.path, frame.NewDict("version", relay.XpraVersion, "request", "info", "info_request", true), false)
		if err != nil {
			continue
		}
		sessions, _ := info.Get("sessions")
		d, _ := sessions.(frame.Dict)
		for _, kv := range d {
			name, _ := frame.AsText(kv.Key)
			sd, _ := kv.Value.(frame.Dict)
			user, _ := sd.Text("user")
			display, _ := sd.Text("target")
			pid, _ := sd.Int("pid")
			fmt.Fprintf(w, "\t\t:%s user %s to %s (pid %d)\n", name, user, display, pid)
		}
	}
	return 0
}

// disconnectError is a server's disconnect answer to a request.
type disconnectError struct{ reason string }

func (e *disconnectError) Error() string { return "disconnected: " + e.reason }

// request sends a request hello over a unix socket and returns the
// server's hello. stop also sends xpra's shutdown-server and waits for
// the server's disconnect.
func request(path string, caps frame.Dict, stop bool) (frame.Dict, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline := 10 * time.Second
	if r, _ := caps.Text("request"); r == "reload" || r == "upgrade" {
		// A reload connects databases; an upgrade waits for the new
		// process to serve (upgradeReadyTimeout).
		deadline = upgradeReadyTimeout + 15*time.Second
	}
	c.SetDeadline(time.Now().Add(deadline))
	w := frame.Writer{Encoding: frame.Rencode}
	out, err := w.AppendPacket(nil, frame.Packet{"hello", caps})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	r := frame.NewStreamReader(c, frame.AbsMaxPacketSize)
	var hello frame.Dict
	for {
		p, err := r.ReadPacket()
		if err != nil {
			if hello != nil && stop {
				return hello, nil // closed after the shutdown
			}
			return nil, err
		}
		switch p.Type() {
		case "hello":
			if len(p) < 2 {
				return nil, errors.New("empty hello")
			}
			hello, _ = p[1].(frame.Dict)
			if !stop {
				return hello, nil
			}
			out, _ := w.AppendPacket(nil, frame.Packet{"shutdown-server"})
			if _, err := c.Write(out); err != nil {
				return nil, err
			}
		case "disconnect":
			var parts []string
			for _, v := range p[1:] {
				s, _ := frame.AsText(v)
				parts = append(parts, s)
			}
			if hello != nil && stop {
				return hello, nil
			}
			return nil, &disconnectError{strings.Join(parts, ": ")}
		case "challenge":
			return nil, errors.New("the proxy socket asks for a password; use xpra info/stop with --password-file")
		}
	}
}

// printInfo writes a dict as xpra info does: flattened dotted keys.
func printInfo(w io.Writer, prefix string, d frame.Dict) {
	var lines []string
	var walk func(string, frame.Dict)
	walk = func(prefix string, d frame.Dict) {
		for _, kv := range d {
			k, _ := frame.AsText(kv.Key)
			if prefix != "" {
				k = prefix + "." + k
			}
			if sub, ok := kv.Value.(frame.Dict); ok {
				walk(k, sub)
				continue
			}
			v, ok := frame.AsText(kv.Value)
			if !ok {
				v = fmt.Sprint(kv.Value)
			}
			lines = append(lines, k+"="+v)
		}
	}
	walk(prefix, d)
	sort.Strings(lines)
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}
