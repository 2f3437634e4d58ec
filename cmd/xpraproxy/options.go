package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/relay"
)

// bind is one --bind-tcp / --bind-unix value.
type bind struct {
	network, address string
	kind             string       // tcp, ws, ssl, wss (tcp network), unix
	auth             []authn.Spec // from ",auth=..." (xpra ≥ 4 syntax)
}

// proxyOptions are `xpraproxy proxy`'s options, named as xpra's.
type proxyOptions struct {
	display    string
	binds      []bind
	tcpAuth    []authn.Spec
	unixAuth   []authn.Spec
	kindAuth   map[string][]authn.Spec // --ws-auth, --wss-auth, --ssl-auth
	sslCert    string
	sslKey     string
	html       string // the HTML5 client's directory ("": none)
	auth       []authn.Spec
	socketDir  string
	socketDirs []string
	daemon     bool
	logFile    string
	logFormat  string // --log-format: text or json (accesslog.go)
	// lim are the values sessions obey, filled by the option table's
	// setters: an option of the sessions is a row there and a field of
	// relay.Limits, nothing more.
	lim        relay.Limits
	maxTotal   int64
	loops      int
	profileDir string
	gcPercent  int
	burstGC    int
	ignored    []string
	// Privilege separation (root only) and metrics.
	workers    string // "uid" or "connection"
	workerIdle time.Duration
	metrics    string        // HOST:PORT of the Prometheus endpoint
	video      string        // --proxy-video-encoders: none, auto (a GPU back end if present), nvjpeg, cpu
	pools      []string      // --pool=NAME:POLICY:TARGET,...
	poolProbe  time.Duration // --pool-probe-interval
	// The front door (docs/frontdoor.md).
	maxConns      int  // --max-connections (-1: from RLIMIT_NOFILE)
	maxLogins     int  // --max-login-connections (-1: from RLIMIT_NOFILE)
	maxPerSource  int  // --max-logins-per-source
	throttle      bool // --login-throttle
	wsRequireMask bool // --websocket-require-mask
	// The fleet (docs/fleet.md).
	registry         string        // --session-registry
	registryName     string        // --registry-name
	registryInterval time.Duration // --registry-interval
	registryExpiry   time.Duration // --registry-expiry
	maxUserSessions  int           // --max-user-sessions
}

// xpraIgnored are xpra options that mean nothing to a proxy without a
// display; accepted so that `xpra proxy` command lines work unchanged.
var xpraIgnored = map[string]bool{
	"mdns": true, "pulseaudio": true, "notifications": true, "speaker": true, "microphone": true,
	"webcam": true, "printing": true, "dbus-proxy": true, "systemd-run": true,
	"start-via-proxy": true, "opengl": true, "mmap": true, "dbus-control": true,
}

func parseBool(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "true", "on", "1", "":
		return true, nil
	case "no", "false", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("--%s: %q is not yes or no", name, v)
}

func parseSeconds(name, v string) (time.Duration, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return d, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--%s: %q is not a number of seconds", name, v)
	}
	return time.Duration(n) * time.Second, nil
}

func parseSize(name, v string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "G"), strings.HasSuffix(v, "GiB"):
		mult, v = 1<<30, strings.TrimRight(v, "GiB")
	case strings.HasSuffix(v, "M"), strings.HasSuffix(v, "MiB"):
		mult, v = 1<<20, strings.TrimRight(v, "MiB")
	case strings.HasSuffix(v, "K"), strings.HasSuffix(v, "KiB"):
		mult, v = 1<<10, strings.TrimRight(v, "KiB")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--%s: %q is not a size", name, v)
	}
	return n * mult, nil
}

// parseBind reads HOST:PORT[,auth=MODULE[:k=v...]][,k=v...]: pairs after
// an auth= that are not bind options belong to that module
// ("auth=sqlite,filename=x" as well as "auth=sqlite:filename=x").
func parseBind(network, v string) (bind, error) {
	parts := strings.Split(v, ",")
	b := bind{network: network, address: parts[0], kind: network}
	switch network {
	case "ws", "ssl", "wss":
		b.network = "tcp"
	}
	if b.network == "tcp" {
		host, port, err := splitHostPort(parts[0])
		if err != nil {
			return b, fmt.Errorf("--bind-tcp=%s: %w", v, err)
		}
		b.address = host + ":" + port
	} else if b.address == "" {
		return b, fmt.Errorf("--bind-unix needs a path")
	}
	for _, kv := range parts[1:] {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return b, fmt.Errorf("--bind-%s=%s: %q is not key=value", network, v, kv)
		}
		switch k {
		case "auth":
			// name:opt=v:opt2=v2 is xpra's colon form of name,opt=v,opt2=v2.
			if i := strings.IndexByte(val, ':'); i >= 0 {
				val = val[:i] + "," + strings.ReplaceAll(val[i+1:], ":", ",")
			}
			spec, err := authn.ParseSpec(val)
			if err != nil {
				return b, err
			}
			b.auth = append(b.auth, spec)
		default:
			if len(b.auth) == 0 {
				return b, fmt.Errorf("--bind-%s=%s: unknown bind option %q", network, v, k)
			}
			b.auth[len(b.auth)-1].Options[k] = val
		}
	}
	return b, nil
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", fmt.Errorf("no port in %q", s)
	}
	host, port := s[:i], s[i+1:]
	if host == "" || host == "*" {
		host = "0.0.0.0"
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return "", "", fmt.Errorf("invalid port number %q", port)
	}
	return strings.Trim(host, "[]"), port, nil
}

// parseProxyArgs reads `xpraproxy proxy` arguments: an optional :DISPLAY
// and --name=value / --name value options (the table in optiontable.go).
// Options not given take xpra's environment variable where the table
// names one, else the table's default.
func parseProxyArgs(args []string) (*proxyOptions, error) {
	return parseProxyArgsEnv(args, os.Getenv)
}

func parseProxyArgsEnv(args []string, getenv func(string) string) (*proxyOptions, error) {
	table := proxyOptionTable()
	byName := map[string]*option{}
	for i := range table {
		for _, n := range table[i].names {
			byName[n] = &table[i]
		}
	}
	o := &proxyOptions{}
	for _, opt := range table {
		v, from := opt.def, "default"
		if opt.env != "" && getenv(opt.env) != "" {
			v, from = getenv(opt.env), opt.env
		}
		if v == "" {
			continue
		}
		if err := opt.set(o, opt.names[0], v); err != nil {
			return nil, fmt.Errorf("%s: %w", from, err)
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			if strings.HasPrefix(a, ":") && o.display == "" {
				if _, err := strconv.Atoi(a[1:]); err != nil {
					return nil, fmt.Errorf("invalid display %q: expected :NUMBER", a)
				}
				o.display = a
				continue
			}
			return nil, fmt.Errorf("unexpected argument %q", a)
		}
		name, val, hasVal := strings.Cut(a[2:], "=")
		opt := byName[name]
		if opt == nil {
			if xpraIgnored[name] {
				o.ignored = append(o.ignored, a)
				if !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && !strings.HasPrefix(args[i+1], ":") {
					i++
				}
				continue
			}
			return nil, fmt.Errorf("unknown option --%s (see 'xpraproxy help')", name)
		}
		if !hasVal && !opt.flag {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("--%s needs a value", name)
			}
			i++
			val = args[i]
		}
		if err := opt.set(o, name, val); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// connectionCaps are --max-connections and --max-login-connections, with
// the defaults derived from the open-file limit: a relayed tcp session
// holds two descriptors (client and server), so half the limit less a
// reserve for listeners, logs and databases; pre-login connections a
// quarter of that, at most 1,024 (xpra's proxy allows 200).
func (o *proxyOptions) connectionCaps() (conns, logins int) {
	var rl syscall.Rlimit
	nofile := 1024
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur > 0 && rl.Cur < 1<<24 {
		nofile = int(rl.Cur)
	}
	conns, logins = o.maxConns, o.maxLogins
	if conns < 0 {
		conns = max((nofile-64)/2, 16)
	}
	if logins < 0 {
		logins = min(max(conns/4, 16), 1024)
	}
	return conns, logins
}

// defaultHTMLDir is where Debian's xpra ships the HTML5 client.
const defaultHTMLDir = "/usr/share/xpra/www"

// defaultGCPercent is the Go GC target the proxy runs with unless GOGC or
// --gc-percent say otherwise. The relay allocates nothing per packet, so a
// tight target costs little CPU, and it brings idle memory per session from
// about 6.4 KB to 3.5 KB at 9,000 sessions (BENCHMARKS.md).
const defaultGCPercent = 25

// gcTarget is the GC target the proxy sets, and whether it sets one:
// GOGC from the environment stands unless --gc-percent gives another
// value than the default.
func (o *proxyOptions) gcTarget(getenv func(string) (string, bool)) (int, bool) {
	if _, set := getenv("GOGC"); set && o.gcPercent == defaultGCPercent {
		return 0, false
	}
	return o.gcPercent, true
}

// defaultBurstGCPercent is the GC target while logins run (loop.Options);
// 0 keeps the steady one. Raising it trades idle density for login rate:
// with real 3.1 hellos, 100 took setups/s from 303 to 522 and 200 to about
// 580, and idle memory per session at 9,000 from 3.9 KB to 4.4 and 4.8 KB
// (long-lived sessions allocated among a burst's garbage in a heap three
// times the size; BENCHMARKS.md). Density is the proxy's point: off.
const defaultBurstGCPercent = 0

// defaultSocketDirs are Debian's xpra socket-dirs for the current user.
func defaultSocketDirs() []string {
	home, _ := os.UserHomeDir()
	return []string{
		fmt.Sprintf("/run/user/%d/xpra", os.Getuid()),
		"/run/xpra",
		filepath.Join(home, ".xpra"),
	}
}

// defaultSocketDirTemplates are the same, to be expanded for the account
// a worker runs as.
var defaultSocketDirTemplates = []string{"/run/user/$UID/xpra", "/run/xpra", "~/.xpra"}

// limits are the options sessions obey, as one value: the in-process
// loops and a root proxy's workers get exactly this.
func (o *proxyOptions) limits() relay.Limits { return o.lim }
