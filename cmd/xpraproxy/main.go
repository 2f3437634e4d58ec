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
)

const usage = `usage:
  xpraproxy proxy [:DISPLAY] [options]     run the proxy server
  xpraproxy sqlite FILE COMMAND [ARGS...]  manage an xpra sqlite user database
  xpraproxy info [:DISPLAY|:proxy-ID]      show a proxy's (or one connection's) info
  xpraproxy stop [:DISPLAY|:proxy-ID]      stop a proxy, or one relayed connection
  xpraproxy list                           list the sessions and proxies in the socket dirs
  xpraproxy bench [flags]                  load benchmark (xpraproxy bench -h)
  xpraproxy gpu [auto|nvenc|nvjpeg|cpu|cpu-jpeg]  GPUs seen by NVML and the re-encoding back end chosen
  xpraproxy version                        print the version

proxy options (xpra's names):
  --bind-tcp=HOST:PORT[,auth=MODULE[:k=v...]]  listen on TCP (repeatable)
  --bind-unix=PATH[,auth=...]                  listen on a unix socket (repeatable)
  --bind-ws=, --bind-ssl=, --bind-wss=HOST:PORT  WebSocket / TLS / WebSocket over TLS listeners
                                               (--bind-tcp ports accept xpra, ws and, with a certificate, TLS too)
  --ssl-cert=FILE --ssl-key=FILE               server certificate for ssl:// and wss://
  --html=on|off|DIR                            serve the HTML5 client (on: /usr/share/xpra/www)
  --ws-auth=, --wss-auth=, --ssl-auth=MODULE   authentication per socket type
  --tcp-auth=MODULE[,k=v...]                   authentication for TCP listeners
  --unix-auth=MODULE[,k=v...]                  authentication for unix listeners
  --auth=MODULE[,k=v...]                       authentication for every listener without its own
  --socket-dir=DIR, --socket-dirs=DIR[,DIR]    where sessions and the proxy's own socket live
  --daemon=yes|no, --log-file=FILE
  --idle-timeout=SECONDS (0: none)  --login-timeout=SECONDS (31)  --connect-timeout=SECONDS (20)
  --max-packet-size=SIZE (16M)  --max-session-buffer=SIZE (32M)  --max-buffer-total=SIZE (1G)
  --gc-percent=N (Go GC target, default 25; GOGC also works)  --loops=N (event loops; default one per CPU)
  --metrics=HOST:PORT                          Prometheus metrics endpoint (/metrics)
  --proxy-video-encoders=auto|none|nvenc|cpu   re-encode servers' raw-RGB video frames to H.264 (auto: only with a GPU encoder)
  --proxy-start-sessions=yes|no (no)           clients may start new sessions (xpra start tcp://proxy/...), as root: run as
                                               their own local account (never root, never nobody)
  --proxy-start-as-proxy-user=yes|no (no)      a proxy that is not root may start sessions as its own account
  --proxy-start-commands=CMD[,CMD] (none)      commands a client may run in a new session (--start=...); * for any
  --proxy-start-xpra=PROG[,PROG] (xpra)        the xpra programs that start sessions, one per generation: each client
                                               gets the first its own generation can use (a row's start-xpra=P[:P] overrides)
  --proxy-start-env=VAR[,VAR] (none)           environment variables a client may set in a new session
  --max-started-sessions=N (4)                 at most N live sessions per user
  --max-connections=N, --max-login-connections=N  caps on open and not-yet-logged-in connections (from RLIMIT_NOFILE)
  --max-logins-per-source=N (16)               connections still logging in from one address (0: no cap)
  --max-login-packet-size=SIZE (256K)          largest packet before login (raw chunks are refused before login)
  --login-throttle=yes|no (yes)                lock out addresses (and usernames for failing addresses) after failed logins
  --max-target-connects=N (32)                 dials in progress to one server
  --websocket-require-mask=yes|no (no)         close every ws client that sends unmasked frames (without it: browsers only;
                                               xpra's python clients do not mask)
  --proxy-ping=SECONDS (5)                     the proxy pings both peers (latency in info); their echoes are not forwarded
  --pool=NAME:POLICY:TARGET[,TARGET...]        a target pool (random, least-sessions, first-live) that a
                                               displays entry "pool:NAME" names; --pool-probe-interval=SECONDS (5)
  --proxy-workers=uid|connection               as root: one relay worker per account (default), or per connection
  --worker-idle-timeout=SECONDS (60)           as root: how long a worker without connections stays
authentication modules: allow, none, reject, fail, password, env, file, multifile, sqlite, exec,
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
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "proxy":
		return proxyMain(args[1:])
	case "sqlite":
		return sqliteMain(args[1:], os.Stdout, os.Stderr)
	case "worker":
		return workerMain(args[1:])
	case "gpu":
		return gpuMain(args[1:], os.Stdout, os.Stderr)
	case "info", "stop", "list":
		return controlMain(args[0], args[1:], os.Stdout, os.Stderr)
	case "bench":
		return benchMain(args[1:], os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Println(versionString())
		return 0
	case "help", "--help", "-h":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "xpraproxy: unknown command %q\n%s", args[0], usage)
	return 2
}
