package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
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
	kind             string       // tcp, ws, ssl, wss (tcp network), unix, quic (udp network)
	auth             []authn.Spec // from ",auth=..." (xpra ≥ 4 syntax)
	authorizedKeys   string       // ",authorized_keys=PATH": SSH users' keys (%u, %h; docs/ssh.md)
	ln               net.Listener // inherited from the service manager (systemd.go); nil: bound
}

// proxyOptions are `xpraproxy proxy`'s options, named as xpra's.
type proxyOptions struct {
	display  string
	binds    []bind
	tcpAuth  []authn.Spec
	unixAuth []authn.Spec
	kindAuth map[string][]authn.Spec // --ws-auth, --wss-auth, --ssl-auth, --ssh-auth
	sslCert  string
	sslKey   string
	// SSH (docs/ssh.md).
	sshUpgrade  bool     // --ssh-upgrade: tcp ports also serve SSH
	sshHostKeys []string // --ssh-host-key files; none: generated into the state directory
	html        string   // the HTML5 client's directory ("": none)
	auth        []authn.Spec
	socketDir   string
	socketDirs  []string
	daemon      bool
	logFile     string
	logFormat   string // --log-format: text or json (accesslog.go)
	// lim are the values sessions obey, filled by the option table's
	// setters: an option of the sessions is a row there and a field of
	// relay.Limits, nothing more.
	lim        relay.Limits
	maxTotal   int64
	readSize   int
	loops      int
	profileDir string
	gcPercent  int
	burstGC    int
	ignored    []string
	// Privilege separation (root only) and metrics.
	workers    string // "uid" or "connection"
	workerIdle time.Duration
	// drainTimeout bounds how long an upgraded process keeps sessions.
	drainTimeout time.Duration
	metrics      string        // HOST:PORT of the Prometheus endpoint
	video        string        // --proxy-video-encoders: none, auto (a GPU back end if present), nvjpeg, cpu
	pools        []string      // --pool=NAME:POLICY:TARGET,...
	poolProbe    time.Duration // --pool-probe-interval
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
	// xpra's parse_bool: any other integer is bool(int(v)).
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return n != 0, nil
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
	case "ws", "ssl", "wss", "ssh":
		b.network = "tcp"
	case "quic":
		b.network = "udp"
	}
	if b.network == "tcp" || b.network == "udp" {
		host, port, err := splitHostPort(parts[0])
		if err != nil {
			return b, fmt.Errorf("--bind-%s=%s: %w", network, v, err)
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
		case "authorized_keys":
			b.authorizedKeys = val
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

// parseProxyArgs reads `xpraproxy proxy` arguments and xpra's environment
// variables, without any conf file (the proxy itself calls
// loadProxyOptions, which adds them).
func parseProxyArgs(args []string) (*proxyOptions, error) {
	return parseProxyArgsEnv(args, os.Getenv)
}

func parseProxyArgsEnv(args []string, getenv func(string) string) (*proxyOptions, error) {
	o, _, err := loadProxyOptions(args, getenv, "")
	return o, err
}

// setting is one value an option got, and where it came from: "FILE:LINE",
// "environment VAR", "command line" or "default".
type setting struct {
	name, value, from string
}

// provenance says where loadProxyOptions found each value (showconfig).
type provenance struct {
	// settings are the values the options were set from, in the order
	// they were applied: defaults first, then the levels lowest first.
	settings []setting
	// ignored are the keys of xpra's conf files that the proxy has no
	// option for, each once, with the first place it was seen.
	ignored []setting
	// files are the conf files read, in order.
	files []string
}

// ignoredKeys are the ignored keys, sorted, for the one log line that
// lists them.
func (p *provenance) ignoredKeys() []string {
	keys := make([]string, 0, len(p.ignored))
	for _, s := range p.ignored {
		keys = append(keys, s.name)
	}
	sort.Strings(keys)
	return keys
}

// loadProxyOptions makes the proxy's options from every level, lowest
// first (docs/config.md): the table's defaults; confDir's xpraproxy.conf,
// then its conf.d/*.conf sorted ("" reads none: tests); each --config, in
// order; xpra's environment variables (the table's env column, read with
// getenv); the command line. Each file is a level of its own, as in xpra.
// An option given on a level replaces what lower levels gave it, a list
// included; within one level values apply in order, so a repeatable
// option accumulates and any other keeps its last value.
//
// It reads files and getenv, and changes nothing: a reload calls it again
// with the original arguments and gets a complete new configuration or an
// error, never half of one.
func loadProxyOptions(args []string, getenv func(string) string, confDir string) (*proxyOptions, *provenance, error) {
	table := proxyOptionTable()
	byName := map[string]*option{}
	for i := range table {
		for _, n := range table[i].names {
			byName[n] = &table[i]
		}
	}
	o := &proxyOptions{}
	cmdline, err := parseCommandLine(o, args, byName)
	if err != nil {
		return nil, nil, err
	}

	// The files, found before anything is set: --config is pre-scanned
	// from the command line.
	prov := &provenance{}
	if confDir != "" {
		if prov.files, err = confDirFiles(confDir, "xpraproxy.conf"); err != nil {
			return nil, nil, err
		}
	}
	for _, s := range cmdline {
		if s.name == "config" {
			fs, err := configFiles(s.value)
			if err != nil {
				return nil, nil, err
			}
			prov.files = append(prov.files, fs...)
		}
	}
	var levels [][]setting
	xpra := xpraOptionNames()
	seen := map[string]bool{}
	for _, f := range prov.files {
		entries, err := readConfFile(f)
		if err != nil {
			return nil, nil, err
		}
		var level []setting
		for _, e := range entries {
			from := fmt.Sprintf("%s:%d", f, e.line)
			switch {
			case e.key == "config":
				return nil, nil, fmt.Errorf("%s: config is a command-line option: a conf file cannot name another", from)
			case byName[e.key] != nil:
				level = append(level, setting{e.key, e.value, from})
			case xpra[e.key] != "":
				if !seen[e.key] {
					seen[e.key] = true
					prov.ignored = append(prov.ignored, setting{name: e.key, from: from})
				}
			default:
				return nil, nil, fmt.Errorf("%s: unknown option %q (did you mean %s?)", from, e.key, nearestOption(e.key, suggestions(table, xpra)))
			}
		}
		levels = append(levels, level)
	}
	nFiles := len(levels)
	var envLevel []setting
	for _, opt := range table {
		if opt.env == "" {
			continue
		}
		if v := getenv(opt.env); v != "" {
			envLevel = append(envLevel, setting{opt.names[0], v, "environment " + opt.env})
		}
	}
	levels = append(levels, envLevel, cmdline)

	// Each name takes the values of the highest level that gives it.
	top := map[string]int{}
	for i, lv := range levels {
		for _, s := range lv {
			top[s.name] = i
		}
	}
	// A file's empty value, and "auto" for a yes|no option, mean the
	// default: the level still replaces lower levels' values.
	isDefault := func(s setting, level int) bool {
		return (level < nFiles && s.value == "") || (byName[s.name].flag && strings.EqualFold(s.value, "auto"))
	}
	var given []setting
	set := map[string]bool{}
	for i, lv := range levels {
		for _, s := range lv {
			if top[s.name] == i && !isDefault(s, i) {
				given = append(given, s)
				set[s.name] = true
			}
		}
	}
	var apply []setting
	for _, opt := range table {
		if opt.def != "" && !set[opt.names[0]] {
			apply = append(apply, setting{opt.names[0], opt.def, "default"})
		}
	}
	apply = append(apply, given...)
	for _, s := range apply {
		if err := byName[s.name].set(o, s.name, s.value); err != nil {
			if s.from == "command line" {
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("%s: %w", s.from, err)
		}
	}
	prov.settings = apply
	return o, prov, nil
}

// parseCommandLine reads an optional :DISPLAY into o and returns the
// --name=value / --name value options in order (the table's names; xpra's
// display-only options are noted in o.ignored), setting nothing else yet.
func parseCommandLine(o *proxyOptions, args []string, byName map[string]*option) ([]setting, error) {
	var out []setting
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
		out = append(out, setting{name, val, "command line"})
	}
	return out, nil
}

// suggestions are the names a misspelt key is compared with: the proxy's
// options first (they win a tie), then xpra's.
func suggestions(table []option, xpra map[string]string) []string {
	var names, other []string
	for _, opt := range table {
		names = append(names, opt.names...)
	}
	for n := range xpra {
		other = append(other, n)
	}
	sort.Strings(other)
	return append(names, other...)
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
// tight target costs little CPU: 25 brought idle memory per session from
// about 6.4 KB to 3.5 KB at 9,000 sessions, and 10 (with logins at
// defaultBurstGCPercent) the soak's peak from about 65 to 60 KB per
// streaming session at the same login rate and stream CPU (BENCHMARKS.md).
const defaultGCPercent = 10

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
// times the size; BENCHMARKS.md). 25 is the steady target logins ran at
// before it went to 10: logins and idle density stay where they were.
const defaultBurstGCPercent = 25

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
