// Command xpraproxy is the xpra proxy server in Go. Its options mirror
// xpra's, so `xpra proxy ...` command lines work with the program name
// replaced.
//
//	xpraproxy proxy [:DISPLAY] [--bind-tcp=HOST:PORT[,auth=MODULE...]] [--tcp-auth=MODULE,...] ...
//	xpraproxy sqlite FILE create|add|remove|list|authenticate ...
//	xpraproxy info|stop [:DISPLAY|:proxy-ID], xpraproxy list
//	xpraproxy showconfig [same arguments as proxy]
//	xpraproxy version
package main

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
)

const usage = `usage:
  xpraproxy proxy [:DISPLAY] [options]     run the proxy server
  xpraproxy showconfig [proxy's args]      the options proxy would run with, and where each came from
  xpraproxy sqlite FILE COMMAND [ARGS...]  manage an xpra sqlite user database
  xpraproxy sql [--cleartext] URI COMMAND [ARGS...]  the same on PostgreSQL or MySQL/MariaDB (hashed passwords)
  xpraproxy info [:DISPLAY|:proxy-ID]      show a proxy's (or one connection's) info
  xpraproxy stop [:DISPLAY|:proxy-ID]      stop a proxy, or one relayed connection
  xpraproxy reload [:DISPLAY]              read the configuration again (as SIGHUP; docs/reload.md)
  xpraproxy upgrade [:DISPLAY]             start the binary now at the proxy's path on its sockets (as SIGUSR2; docs/upgrade.md)
  xpraproxy list                           list the sessions and proxies in the socket dirs
  xpraproxy sessions --registry=URI        every session of every instance of a fleet (docs/fleet.md)
  xpraproxy stop INSTANCE/ID --registry=URI  end a session wherever in the fleet it runs
  xpraproxy bench [flags]                  load benchmark (xpraproxy bench -h)
  xpraproxy gpu [auto|nvenc|nvjpeg|cpu|cpu-jpeg]  GPUs seen by NVML and the re-encoding back end chosen
  xpraproxy version                        print the version

authentication modules: allow, none, reject, fail, password, env, file, multifile, sqlite, exec,
  sql/mysql (uri=, passwords=cleartext|hashed, max_connections=, timeout=, password_query=, sessions_query=),
  pam (service=), ldap/ldap3 (host=, port=, tls=, cacert=, username_format=, uid=, gid=),
  hosts (allow=, deny=: tcp wrappers files), peercred (allow-uids=, allow-gids=: unix sockets)

sqlite commands (same as xpra's sqlite_auth.py):
  create | add USER PASSWORD [UID GID DISPLAYS ENV_OPTIONS SESSION_OPTIONS] |
  remove USER [PASSWORD] | list | authenticate USER PASSWORD
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, helpText())
		return 2
	}
	switch args[0] {
	case "proxy":
		return proxyMain(args[1:])
	case "showconfig":
		return showconfigMain(args[1:], os.Getenv, systemConfDir(os.Getenv), os.Stdout, os.Stderr)
	case "sqlite":
		return sqliteMain(args[1:], os.Stdout, os.Stderr)
	case "sql", "mysql":
		return sqlMain(args[1:], os.Stdout, os.Stderr)
	case "worker":
		return workerMain(args[1:])
	case "gpu":
		return gpuMain(args[1:], os.Stdout, os.Stderr)
	case "sessions":
		return sessionsMain(args[1:], os.Stdout, os.Stderr)
	case "info", "stop", "list", "reload", "upgrade":
		return controlMain(args[0], args[1:], os.Stdout, os.Stderr)
	case "bench":
		return benchMain(args[1:], os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Println(versionString())
		return 0
	case "help", "--help", "-h":
		if len(args) > 1 && args[1] == "--markdown" {
			fmt.Print(optionsMarkdown())
			return 0
		}
		fmt.Print(helpText())
		return 0
	}
	fmt.Fprintf(os.Stderr, "xpraproxy: unknown command %q\n%s", args[0], helpText())
	return 2
}

// helpText is the commands, the proxy's options (from the option table)
// and the modules.
func helpText() string {
	cmds, rest, _ := strings.Cut(usage, "authentication modules:")
	return strings.TrimRight(cmds, "\n") + "\n\nproxy options (xpra's names):\n" + optionsHelp() + confHelp + "authentication modules:" + rest
}

// confHelp is the paragraph of `xpraproxy help` on conf files.
const confHelp = `
configuration files (docs/config.md): options are read, each level replacing the one before, from
  the defaults above; ` + defaultConfDir + `/xpraproxy.conf, then ` + defaultConfDir + `/conf.d/*.conf sorted
  (XPRAPROXY_CONF_DIR names another directory); each --config=FILE|DIR in order; xpra's environment
  variables; the command line. Each file is a level. Files use xpra's syntax ("key = value", # and !
  comment lines, a trailing \ continues the line, a key given again adds a value), and xpra's own
  files (--config=/etc/xpra) work: their options that mean nothing to a proxy are logged once as
  ignored. A repeatable option (--bind-tcp, --tcp-auth, --auth, --pool, --socket-dirs, ...) given on
  a later level REPLACES the earlier level's values; within one level its values accumulate.
  "key =" with no value in a file sets the default (for a list: none).

`

// showconfigMain prints the options `xpraproxy proxy` would run with for
// the same arguments, one value per line as "key = value", each followed
// by where it came from (a file and line, an environment variable, the
// command line or the default). Secrets in values are shown as ***.
func showconfigMain(args []string, getenv func(string) string, confDir string, stdout, stderr io.Writer) int {
	o, prov, err := loadProxyOptions(args, getenv, confDir)
	if err != nil {
		fmt.Fprintln(stderr, "xpraproxy:", redactText(err.Error()))
		return 2
	}
	fmt.Fprint(stdout, showconfig(o, prov))
	return 0
}

// showconfig is showconfigMain's text: the files read, then every option
// of the table in its order (the display first), then xpra's ignored keys.
func showconfig(o *proxyOptions, prov *provenance) string {
	var b strings.Builder
	line := func(name, value, from string) {
		if value != "" {
			value = " " + redactValue(value)
		}
		fmt.Fprintf(&b, "%s =%s  # %s\n", name, value, from)
	}
	b.WriteString("# xpraproxy showconfig: each value and where it came from\n")
	for _, f := range prov.files {
		b.WriteString("# read " + f + "\n")
	}
	if o.display != "" {
		line("display", o.display, "command line")
	} else {
		line("display", defaultDisplay, "default")
	}
	byName := map[string][]setting{}
	for _, s := range prov.settings {
		byName[s.name] = append(byName[s.name], s)
	}
	table := proxyOptionTable()
	for _, opt := range table {
		for _, n := range opt.names {
			if n == "config" { // the files, listed above
				continue
			}
			ss := byName[n]
			if len(ss) > 1 && lastOnly(opt, n, ss) {
				ss = ss[len(ss)-1:]
			}
			for _, s := range ss {
				if s.from == "default" && opt.shown != "" {
					s.from = "default: " + opt.shown
				}
				line(n, s.value, s.from)
			}
			if len(ss) == 0 {
				from := "not set"
				if opt.shown != "" && n == opt.names[0] {
					from = "default: " + opt.shown
				}
				line(n, "", from)
			}
		}
	}
	for _, s := range prov.ignored {
		fmt.Fprintf(&b, "# ignored: %s  # %s (xpra's, no meaning for a proxy)\n", s.name, s.from)
	}
	return b.String()
}

// lastOnly says whether only the last of an option's values counts: the
// table has no "repeatable" column, so the setter decides — an option
// whose values all together set the same as its last one alone keeps one
// value (--ssl-cert), one that accumulates keeps them all (--bind-tcp).
func lastOnly(opt option, name string, ss []setting) bool {
	all, last := &proxyOptions{}, &proxyOptions{}
	for _, s := range ss {
		if opt.set(all, name, s.value) != nil {
			return false
		}
	}
	if opt.set(last, name, ss[len(ss)-1].value) != nil {
		return false
	}
	return reflect.DeepEqual(all, last)
}

// redactValue hides the secrets an option value may carry: the password
// of any scheme://user:password@host (database and registry URIs, pool
// and displays targets) and the value of a password-like module option
// (password=, value=, secret=, token=; the rest of its comma-separated
// part, since xpra's colon form may follow it). Paths, key files
// included, are not secrets and stay.
func redactValue(v string) string { return redact(v, false) }

// redactText is redactValue for a message that quotes values (an error):
// a secret also ends at white space or a quote, so that the words after
// it stay.
func redactText(s string) string { return redact(s, true) }

func redact(v string, text bool) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		parts[i] = redactPart(p, text)
	}
	return strings.Join(parts, ",")
}

func redactPart(p string, text bool) string {
	// URIs: everything between "://" and the last '@' of its segment,
	// after the user name's ':', is the password.
	for at := 0; ; {
		i := strings.Index(p[at:], "://")
		if i < 0 {
			break
		}
		start := at + i + 3
		end := len(p)
		if j := strings.Index(p[start:], "://"); j >= 0 {
			end = start + j
		}
		seg := p[start:end]
		if a := strings.LastIndexByte(seg, '@'); a >= 0 {
			if c := strings.IndexByte(seg[:a], ':'); c >= 0 {
				p = p[:start] + seg[:c+1] + "***" + p[start+a:]
				end = start + c + 1 + 3 + (len(seg) - a)
			}
		}
		at = end
	}
	// key=value options, in either of xpra's forms (k=v,k=v or k=v:k=v).
	off := 0
	for _, sub := range strings.Split(p, ":") {
		if k, _, ok := strings.Cut(sub, "="); ok && secretKey(k) {
			eq := off + strings.IndexByte(sub, '=')
			end := len(p)
			if i := strings.IndexAny(p[eq+1:], " \t\n\"'`"); text && i >= 0 {
				end = eq + 1 + i
			}
			return p[:eq+1] + "***" + p[end:]
		}
		off += len(sub) + 1
	}
	return p
}

// secretKey says whether a module option holds a secret.
func secretKey(k string) bool {
	k = strings.ToLower(strings.TrimSpace(k))
	switch {
	case k == "value", k == "passwords", strings.HasSuffix(k, "_query"):
		return k == "value"
	}
	return strings.Contains(k, "password") || strings.Contains(k, "passwd") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}
