package main

// The proxy's options as one table: the parser, `xpraproxy help` and
// README's option list are all made from it, so they cannot drift apart.
// A default is written as a command-line value and parsed by the same
// setter, so the help cannot claim a default the parser does not use.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// option is one row of the table.
type option struct {
	names []string // the first is the option's name; others share its setter
	arg   string   // the value's shape, for help ("SECONDS", "yes|no")
	def   string   // the default as a command-line value; "" for none
	shown string   // the default as help shows it, when def is not enough
	env   string   // xpra's environment variable for the same setting
	help  string
	// flag options may be given without a value (--daemon: yes).
	flag bool
	set  func(o *proxyOptions, name, v string) error
}

// setters for the common shapes; each names the field it fills.

func seconds(f func(*proxyOptions) *time.Duration) func(*proxyOptions, string, string) error {
	return func(o *proxyOptions, name, v string) (err error) {
		*f(o), err = parseSeconds(name, v)
		return err
	}
}

func size[T int | int64](f func(*proxyOptions) *T) func(*proxyOptions, string, string) error {
	return func(o *proxyOptions, name, v string) error {
		n, err := parseSize(name, v)
		*f(o) = T(n)
		return err
	}
}

// readSize is --read-size: between 4 KiB and 1 MiB (gnet rounds it up
// to a power of two).
func readSize(o *proxyOptions, name, v string) error {
	n, err := parseSize(name, v)
	if err == nil && (n < 4<<10 || n > 1<<20) {
		err = fmt.Errorf("--%s: %q is not between 4K and 1M", name, v)
	}
	o.readSize = int(n)
	return err
}

// count reads a non-negative number; "auto" (when allowed) is -1.
func count(f func(*proxyOptions) *int, auto bool) func(*proxyOptions, string, string) error {
	return func(o *proxyOptions, name, v string) error {
		if auto && v == "auto" {
			*f(o) = -1
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("--%s: %q is not a number >= 0", name, v)
		}
		*f(o) = n
		return nil
	}
}

func integer(f func(*proxyOptions) *int) func(*proxyOptions, string, string) error {
	return func(o *proxyOptions, name, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("--%s: %q is not a number", name, v)
		}
		*f(o) = n
		return nil
	}
}

func boolean(f func(*proxyOptions) *bool) func(*proxyOptions, string, string) error {
	return func(o *proxyOptions, name, v string) (err error) {
		*f(o), err = parseBool(name, v)
		return err
	}
}

func text(f func(*proxyOptions) *string, choices ...string) func(*proxyOptions, string, string) error {
	return func(o *proxyOptions, name, v string) error {
		if len(choices) > 0 && !slices.Contains(choices, v) {
			return fmt.Errorf("--%s: %q is not %s", name, v, strings.Join(choices, ", "))
		}
		*f(o) = v
		return nil
	}
}

// list reads a comma-separated list, replacing the previous one.
func list(f func(*proxyOptions) *[]string) func(*proxyOptions, string, string) error {
	return func(o *proxyOptions, _, v string) error {
		var out []string
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" {
				out = append(out, c)
			}
		}
		*f(o) = out
		return nil
	}
}

// authOption appends a module spec to the list the option name picks.
func authOption(o *proxyOptions, name, v string) error {
	spec, err := authn.ParseSpec(v)
	if err != nil {
		return err
	}
	switch name {
	case "tcp-auth":
		o.tcpAuth = append(o.tcpAuth, spec)
	case "unix-auth":
		o.unixAuth = append(o.unixAuth, spec)
	case "auth":
		o.auth = append(o.auth, spec)
	default: // ws-auth, wss-auth, ssl-auth, ssh-auth
		if o.kindAuth == nil {
			o.kindAuth = map[string][]authn.Spec{}
		}
		k := strings.TrimSuffix(name, "-auth")
		o.kindAuth[k] = append(o.kindAuth[k], spec)
	}
	return nil
}

func bindOption(o *proxyOptions, name, v string) error {
	b, err := parseBind(strings.TrimPrefix(name, "bind-"), v)
	if err == nil {
		o.binds = append(o.binds, b)
	}
	return err
}

func htmlOption(o *proxyOptions, _, v string) error {
	switch strings.ToLower(v) {
	case "no", "off", "false", "0", "":
		o.html = ""
		return nil
	case "yes", "on", "true", "1", "auto":
		o.html = defaultHTMLDir
	default:
		o.html = v
	}
	if fi, err := os.Stat(filepath.Join(o.html, "index.html")); err != nil || fi.IsDir() {
		return fmt.Errorf("--html: %s has no index.html (Debian's xpra-html5 files are in %s)", o.html, defaultHTMLDir)
	}
	return nil
}

// proxyOptionTable is every option of `xpraproxy proxy`, in help order.
func proxyOptionTable() []option {
	return []option{
		// Read before every other option (loadProxyOptions), so its
		// setter has nothing left to do.
		{names: []string{"config"}, arg: "FILE|DIR", set: func(*proxyOptions, string, string) error { return nil },
			help: "read options from this conf file, or a directory's xpraproxy.conf (or xpra.conf) and conf.d/*.conf (repeatable, in order; after " +
				defaultConfDir + ", before the environment and the command line; docs/config.md)"},
		{names: []string{"bind-tcp"}, arg: "HOST:PORT[,auth=MODULE[:k=v...]]", set: bindOption,
			help: "listen on TCP (repeatable); one port also accepts ws and, with a certificate, TLS"},
		{names: []string{"bind-unix"}, arg: "PATH[,auth=...]", set: bindOption, help: "listen on a unix socket (repeatable)"},
		{names: []string{"bind-ws", "bind-ssl", "bind-wss"}, arg: "HOST:PORT[,auth=...]", set: bindOption,
			help: "WebSocket, TLS and WebSocket-over-TLS listeners (repeatable)"},
		{names: []string{"bind-quic"}, arg: "HOST:PORT[,auth=...]", set: bindOption,
			help: "listen on UDP for xpra's quic:// (WebSocket over HTTP/3) and HTTP/3 GETs of the HTML5 client (repeatable; needs --ssl-cert; docs/quic.md)"},
		{names: []string{"bind-ssh"}, arg: "HOST:PORT[,auth=...][,authorized_keys=PATH]", set: bindOption,
			help: "an SSH-only listener (repeatable; ssh:// clients, docs/ssh.md); authorized_keys (also on --bind-tcp): users' public keys, %u the username, %h their home (default: ~/.ssh/authorized_keys as root)"},
		{names: []string{"ssh-upgrade"}, arg: "yes|no", def: "yes", flag: true, set: boolean(func(o *proxyOptions) *bool { return &o.sshUpgrade }),
			help: "TCP ports also serve ssh:// (a client whose first bytes are SSH-)"},
		{names: []string{"ssh-host-key"}, arg: "FILE", set: func(o *proxyOptions, _, v string) error {
			o.sshHostKeys = append(o.sshHostKeys, v)
			return nil
		}, help: "an SSH host key (OpenSSH private key file; repeatable); without: ed25519 and RSA keys generated once into the state directory (" +
			"/var/lib/xpraproxy as root, else ~/.config/xpraproxy) and kept"},
		{names: []string{"ssl-cert"}, arg: "FILE", set: text(func(o *proxyOptions) *string { return &o.sslCert }),
			help: "server certificate (PEM) for ssl://, wss:// and quic://"},
		{names: []string{"ssl-key"}, arg: "FILE", set: text(func(o *proxyOptions) *string { return &o.sslKey }),
			help: "its private key (default: in the certificate file)"},
		{names: []string{"html"}, arg: "on|off|DIR", def: "off", set: htmlOption,
			help: "serve the HTML5 client (on: " + defaultHTMLDir + ")"},
		{names: []string{"tcp-encryption", "encryption"}, arg: "AES|AES-CBC|AES-CTR",
			set:  text(func(o *proxyOptions) *string { return &o.lim.ClientEncryption }, "", "AES", "AES-CBC", "AES-CTR"),
			help: "tcp clients must encrypt with xpra's AES (3.1: AES-CBC; 6.x: CBC or CTR), keyed from --tcp-encryption-keyfile or XPRA_ENCRYPTION_KEY (docs/aes.md)"},
		{names: []string{"tcp-encryption-keyfile", "encryption-keyfile"}, arg: "FILE",
			set:  text(func(o *proxyOptions) *string { return &o.lim.EncryptionKeyFile }),
			help: "the AES key of encrypted client links (the file's first bytes, without a trailing newline)"},
		{names: []string{"auth"}, arg: "MODULE[,k=v...]", set: authOption, help: "authentication for every listener without its own (repeatable: all must pass)"},
		{names: []string{"tcp-auth"}, arg: "MODULE[,k=v...]", set: authOption, help: "authentication for TCP listeners"},
		{names: []string{"unix-auth"}, arg: "MODULE[,k=v...]", set: authOption, help: "authentication for unix listeners"},
		{names: []string{"ws-auth", "wss-auth", "ssl-auth", "ssh-auth"}, arg: "MODULE[,k=v...]", set: authOption,
			help: "authentication per socket type (ssh-auth: SSH logins on any port; else the port's own)"},
		{names: []string{"socket-dir"}, arg: "DIR", set: text(func(o *proxyOptions) *string { return &o.socketDir }),
			help: "where the proxy's own socket goes (default: the first socket-dirs entry)"},
		{names: []string{"socket-dirs"}, arg: "DIR[,DIR...]", shown: strings.Join(defaultSocketDirTemplates, ","),
			set: func(o *proxyOptions, _, v string) error {
				o.socketDirs = append(o.socketDirs, strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ':' })...)
				return nil
			}, help: "where users' sessions are found"},
		{names: []string{"daemon"}, arg: "yes|no", def: "no", flag: true, set: boolean(func(o *proxyOptions) *bool { return &o.daemon }),
			help: "run in the background"},
		{names: []string{"log-file"}, arg: "FILE", set: text(func(o *proxyOptions) *string { return &o.logFile }), help: "log here (default: stderr)"},
		{names: []string{"log-format"}, arg: "text|json", def: "text", set: text(func(o *proxyOptions) *string { return &o.logFormat }, logFormats...),
			help: "the log's format: slog's logfmt text or JSON; each session's end is one \"session ended\" line (docs/accesslog.md), structured fields when stderr is the journal"},
		{names: []string{"idle-timeout"}, arg: "SECONDS", def: "0", set: seconds(func(o *proxyOptions) *time.Duration { return &o.lim.IdleTimeout }),
			help: "end a relayed session with no traffic for this long (0: never)"},
		{names: []string{"login-timeout"}, arg: "SECONDS", def: "31", set: seconds(func(o *proxyOptions) *time.Duration { return &o.lim.LoginTimeout }),
			help: "a client must have logged in (hello and challenge) within this"},
		{names: []string{"challenge-timeout"}, arg: "SECONDS", def: "120", env: "XPRA_CHALLENGE_TIMEOUT",
			set:  seconds(func(o *proxyOptions) *time.Duration { return &o.lim.ChallengeTimeout }),
			help: "time a challenged client has to answer (a person may be typing a password)"},
		{names: []string{"connect-timeout"}, arg: "SECONDS", def: "20", env: "XPRA_SOCKET_TIMEOUT",
			set: seconds(func(o *proxyOptions) *time.Duration { return &o.lim.ConnectTimeout }), help: "dialing and logging in to a server"},
		{names: []string{"max-packet-size"}, arg: "SIZE", def: "16M", env: "XPRA_MAX_PACKET_SIZE",
			set: size(func(o *proxyOptions) *int { return &o.lim.MaxPacketSize }), help: "largest packet a client may send after login"},
		{names: []string{"max-session-buffer"}, arg: "SIZE", def: "4M", set: size(func(o *proxyOptions) *int { return &o.lim.MaxSessionBuffer }),
			help: "bytes one session may hold (flow control keeps it near 200K; a packet held whole may take it beyond by half)"},
		{names: []string{"stall-timeout"}, arg: "SECONDS", def: "60", set: seconds(func(o *proxyOptions) *time.Duration { return &o.lim.StallTimeout }),
			help: "end a session whose peer has read nothing queued for it for this long (slow readers are slowed, not cut; 0: never)"},
		{names: []string{"read-size"}, arg: "SIZE", def: "32K", set: readSize,
			help: "the most one read takes from a socket (per event loop): a paused session holds up to this much of its source's bytes; larger reads cost less CPU per MB and more memory per paused session (BENCHMARKS.md)"},
		{names: []string{"max-buffer-total"}, arg: "SIZE", def: "1G", set: size(func(o *proxyOptions) *int64 { return &o.maxTotal }),
			help: "bytes all sessions together may hold queued"},
		{names: []string{"max-connections"}, arg: "N|auto", def: "auto", shown: "auto: from RLIMIT_NOFILE",
			set: count(func(o *proxyOptions) *int { return &o.maxConns }, true), help: "open client connections"},
		{names: []string{"max-login-connections"}, arg: "N|auto", def: "auto", shown: "auto: a quarter of max-connections, at most 1024",
			env: "XPRA_PROXY_MAX_CONCURRENT_CONNECTIONS", set: count(func(o *proxyOptions) *int { return &o.maxLogins }, true),
			help: "connections not logged in yet"},
		{names: []string{"max-logins-per-source"}, arg: "N", def: "16", set: count(func(o *proxyOptions) *int { return &o.maxPerSource }, false),
			help: "connections still logging in from one address (0: no cap)"},
		{names: []string{"max-login-packet-size"}, arg: "SIZE", def: "256K", set: size(func(o *proxyOptions) *int { return &o.lim.LoginPacketSize }),
			help: "largest packet before login (raw chunks are refused before login)"},
		{names: []string{"bridge"}, arg: "yes|no", def: "yes", flag: true, set: func(o *proxyOptions, name, v string) error {
			on, err := parseBool(name, v)
			o.lim.NoBridge = !on
			return err
		},
			help: "translate between xpra 3.1 and 6.x peers when a client's server is of the other generation (docs/bridge.md; a displays row's session option bridge=no turns it off for that row)"},
		{names: []string{"login-throttle"}, arg: "yes|no", def: "yes", flag: true, set: boolean(func(o *proxyOptions) *bool { return &o.throttle }),
			help: "lock out addresses (and usernames for failing addresses) after failed logins"},
		{names: []string{"max-target-connects"}, arg: "N", def: "32", set: count(func(o *proxyOptions) *int { return &o.lim.MaxTargetConnects }, false),
			help: "dials in progress to one server"},
		{names: []string{"websocket-require-mask"}, arg: "yes|no", def: "no", flag: true,
			set:  boolean(func(o *proxyOptions) *bool { return &o.wsRequireMask }),
			help: "close every ws client that sends unmasked frames (without it: browsers only; xpra's python clients do not mask)"},
		{names: []string{"proxy-ping"}, arg: "SECONDS", def: "5", env: "XPRA_PROXY_PING_INTERVAL",
			set:  seconds(func(o *proxyOptions) *time.Duration { return &o.lim.PingInterval }),
			help: "the proxy pings both peers (latency in info); their echoes are not forwarded (0: off)"},
		{names: []string{"pool"}, arg: "NAME:POLICY:TARGET[,TARGET...]", set: func(o *proxyOptions, _, v string) error {
			o.pools = append(o.pools, v)
			return nil
		}, help: "a target pool that a displays entry \"pool:NAME\" names; POLICY: " + strings.Join(route.Policies(), ", ")},
		{names: []string{"pool-probe-interval"}, arg: "SECONDS", def: "5", set: seconds(func(o *proxyOptions) *time.Duration { return &o.poolProbe }),
			help: "how often every pool member is probed"},
		{names: []string{"proxy-start-sessions"}, arg: "yes|no", def: "no", flag: true, set: boolean(func(o *proxyOptions) *bool { return &o.lim.StartSessions }),
			help: "clients may start new sessions (xpra start tcp://proxy/...); as root they run as the user's own account, never root or nobody"},
		{names: []string{"proxy-start-as-proxy-user"}, arg: "yes|no", def: "no", flag: true, set: boolean(func(o *proxyOptions) *bool { return &o.lim.StartAsProxyUser }),
			help: "a proxy that is not root may start sessions as its own account"},
		{names: []string{"proxy-start-commands"}, arg: "CMD[,CMD...]", set: list(func(o *proxyOptions) *[]string { return &o.lim.StartCommands }),
			help: "commands a client may run in a new session (--start=...); * for any"},
		{names: []string{"proxy-start-xpra"}, arg: "PROG[,PROG...]", def: relay.DefaultXpra, set: list(func(o *proxyOptions) *[]string { return &o.lim.StartXpra }),
			help: "the xpra programs that start sessions, one per generation: each client gets the first its generation can use (a row's start-xpra=P[:P] overrides)"},
		{names: []string{"proxy-start-env"}, arg: "VAR[,VAR...]", set: list(func(o *proxyOptions) *[]string { return &o.lim.StartEnv }),
			help: "environment variables a client may set in a new session"},
		{names: []string{"max-started-sessions"}, arg: "N", def: "4", set: count(func(o *proxyOptions) *int { return &o.lim.MaxStartedSessions }, false),
			help: "a user may start a session while fewer than N of theirs run (0: no limit)"},
		{names: []string{"session-registry"}, arg: "postgresql://USER:PASS@HOST/DB", set: text(func(o *proxyOptions) *string { return &o.registry }),
			help: "share sessions with the other instances of a fleet in this PostgreSQL database: fleet-wide least-sessions, affinity, --max-user-sessions, xpraproxy sessions/stop (docs/fleet.md)"},
		{names: []string{"registry-name"}, arg: "NAME", shown: "HOST/first tcp listener", set: text(func(o *proxyOptions) *string { return &o.registryName }),
			help: "this instance's name in the registry (unique in the fleet)"},
		{names: []string{"registry-interval"}, arg: "SECONDS", def: "2", set: seconds(func(o *proxyOptions) *time.Duration { return &o.registryInterval }),
			help: "how often the instance writes its heartbeat and sessions (one transaction each time)"},
		{names: []string{"registry-expiry"}, arg: "SECONDS", def: "15", set: seconds(func(o *proxyOptions) *time.Duration { return &o.registryExpiry }),
			help: "an instance silent this long is gone: its sessions leave the registry"},
		{names: []string{"max-user-sessions"}, arg: "N", def: "0", set: count(func(o *proxyOptions) *int { return &o.maxUserSessions }, false),
			help: "sessions one user may have at once, across the fleet with a registry (0: no limit)"},
		{names: []string{"proxy-video-encoders"}, arg: "auto|none|nvenc|cpu", def: "auto",
			set:  text(func(o *proxyOptions) *string { return &o.video }, "none", "auto", "nvenc", "cpu"),
			help: "re-encode servers' raw-RGB video frames to H.264 (auto: only with a GPU encoder)"},
		{names: []string{"proxy-workers"}, arg: "uid|connection", def: "uid", set: text(func(o *proxyOptions) *string { return &o.workers }, "uid", "connection"),
			help: "as root: one relay worker per account, or per connection"},
		{names: []string{"upgrade-drain-timeout"}, arg: "SECONDS", def: "3600", set: seconds(func(o *proxyOptions) *time.Duration { return &o.drainTimeout }),
			help: "after an upgrade (SIGUSR2, xpraproxy upgrade) the old process's sessions go on this long at most, then are told the proxy was upgraded (docs/upgrade.md)"},
		{names: []string{"worker-idle-timeout"}, arg: "SECONDS", def: "60", set: seconds(func(o *proxyOptions) *time.Duration { return &o.workerIdle }),
			help: "as root: how long a worker without connections stays"},
		{names: []string{"metrics"}, arg: "HOST:PORT", set: func(o *proxyOptions, _, v string) error {
			_, _, err := splitHostPort(v)
			o.metrics = v
			return err
		}, help: "serve Prometheus metrics on /metrics"},
		{names: []string{"loops"}, arg: "N", def: "0", shown: "one per CPU", set: count(func(o *proxyOptions) *int { return &o.loops }, false),
			help: "event loops"},
		{names: []string{"gc-percent"}, arg: "N", def: strconv.Itoa(defaultGCPercent), set: integer(func(o *proxyOptions) *int { return &o.gcPercent }),
			help: "the Go GC target (GOGC also works)"},
		{names: []string{"burst-gc-percent"}, arg: "N", def: strconv.Itoa(defaultBurstGCPercent), set: integer(func(o *proxyOptions) *int { return &o.burstGC }),
			help: "the Go GC target while logins run: more logins per second, more memory per idle session after them (BENCHMARKS.md); 0: the steady one throughout"},
		{names: []string{"profile-dir"}, arg: "DIR", set: text(func(o *proxyOptions) *string { return &o.profileDir }),
			help: "write CPU and heap profiles here"},
	}
}

// usageLeft is an option's left column in help: its names and value.
func (opt option) usageLeft() string {
	var parts []string
	for i, n := range opt.names {
		if i < len(opt.names)-1 {
			parts = append(parts, "--"+n+"=,")
			continue
		}
		parts = append(parts, "--"+n+"="+opt.arg)
	}
	return strings.Join(parts, " ")
}

// defaultText is the default as help shows it ("" for none).
func (opt option) defaultText() string {
	if opt.shown != "" {
		return opt.shown
	}
	return opt.def
}

// optionsHelp is the option list of `xpraproxy help`, wrapped to fit
// 100 columns.
func optionsHelp() string {
	var b strings.Builder
	for _, opt := range proxyOptionTable() {
		text := opt.help
		if d := opt.defaultText(); d != "" {
			text += " (default: " + d + ")"
		}
		if opt.env != "" {
			text += " [xpra: " + opt.env + "]"
		}
		b.WriteString(wrapHelp("  "+opt.usageLeft(), text))
	}
	ignored := make([]string, 0, len(xpraIgnored))
	for n := range xpraIgnored {
		ignored = append(ignored, "--"+n)
	}
	sort.Strings(ignored)
	b.WriteString(wrapHelp("  (accepted, ignored)", "xpra options that need a display: "+strings.Join(ignored, " ")))
	return b.String()
}

// wrapHelp puts text in a column beside left, on the next line when left
// is too wide.
func wrapHelp(left, text string) string {
	const col, width = 44, 100
	var b strings.Builder
	if len(left) >= col-1 {
		b.WriteString(left + "\n")
		left = ""
	}
	line := left + strings.Repeat(" ", col-len(left))
	for _, w := range strings.Fields(text) {
		if len(line) > col && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = strings.Repeat(" ", col)
		}
		if len(line) > col {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
	return b.String()
}

// optionsMarkdown is README's option list (`xpraproxy help --markdown`).
func optionsMarkdown() string {
	var b strings.Builder
	b.WriteString("| option | default | what it does |\n| --- | --- | --- |\n")
	esc := strings.NewReplacer("|", `\|`)
	for _, opt := range proxyOptionTable() {
		text := opt.help
		if opt.env != "" {
			text += "; xpra's `" + opt.env + "` sets it too"
		}
		d := opt.defaultText()
		if d != "" {
			d = "`" + d + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", esc.Replace(opt.usageLeft()), esc.Replace(d), esc.Replace(text))
	}
	return b.String()
}
