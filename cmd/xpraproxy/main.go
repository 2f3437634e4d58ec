// Command xpraproxy is the xpra proxy server in Go. Its options mirror
// xpra's, so `xpra proxy ...` command lines work with the program name
// replaced.
//
//	xpraproxy proxy [:DISPLAY] [--bind-tcp=HOST:PORT[,auth=MODULE...]] [--tcp-auth=MODULE,...] ...
//	xpraproxy sqlite FILE create|add|remove|list|authenticate ...
//	xpraproxy info|stop [:DISPLAY|:proxy-ID], xpraproxy list
//	xpraproxy version
package main

import (
	"fmt"
	"os"
	"strings"
)

const usage = `usage:
  xpraproxy proxy [:DISPLAY] [options]     run the proxy server
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
	return strings.TrimRight(cmds, "\n") + "\n\nproxy options (xpra's names):\n" + optionsHelp() + "authentication modules:" + rest
}
