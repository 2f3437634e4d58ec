package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/authn/sqliteauth"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/privsep"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

const (
	defaultDisplay = ":14500"
	defaultBind    = "127.0.0.1:14500"
)

func versionString() string {
	v := "xpraproxy " + relay.Version + " (xpra protocol " + relay.XpraVersion + ")"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v += " " + bi.GoVersion
	}
	return v
}

func proxyMain(args []string) int {
	// A process an upgrade started gets its predecessor's sockets first
	// (docs/upgrade.md), and tells it why when it cannot serve.
	succ, err := privsep.AdoptUpgrade(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xpraproxy:", err)
		return 1
	}
	fail := func(code int, err error) int {
		err = errors.New(redactText(err.Error()))
		fmt.Fprintln(os.Stderr, "xpraproxy:", err)
		if succ != nil {
			succ.Fail(err)
		}
		return code
	}
	o, prov, err := loadProxyOptions(args, os.Getenv, systemConfDir(os.Getenv))
	if err != nil {
		return fail(2, err)
	}
	if pct, ok := o.gcTarget(os.LookupEnv); ok {
		debug.SetGCPercent(pct)
	}
	// systemd's sockets (socket activation) or a predecessor's, adopted
	// the same way (systemd.go).
	act, err := inheritSockets(o, succ.Files())
	if err != nil {
		return fail(1, err)
	}
	act.keepForeground(o)
	if err := prepareOptions(o); err != nil {
		return fail(1, err)
	}
	if o.daemon && succ == nil {
		return daemonize(o, args)
	}
	logOut := io.Writer(os.Stderr)
	if o.logFile != "" {
		f, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return fail(1, err)
		}
		defer f.Close()
		logOut = f
	}
	log, err := newLogger(o.logFormat, logOut)
	if err != nil {
		return fail(2, err)
	}
	act.log(log)
	for _, ig := range o.ignored {
		log.Info("xpra option has no meaning for a proxy; ignored", "option", ig)
	}
	if keys := prov.ignoredKeys(); len(keys) > 0 {
		log.Info("xpra options in the conf files have no meaning for a proxy; ignored", "options", strings.Join(keys, " "))
	}
	srv, ctl, err := buildServer(o, log, logOut)
	if err != nil {
		return fail(1, err)
	}
	ctl.args, ctl.act = args, act
	defer ctl.quic.Close()
	if ctl.sup != nil {
		log.Info("running as root: each connection is relayed by a worker running as its target account",
			"workers", o.workers)
		defer ctl.sup.Close(5 * time.Second)
		go ctl.sweepWorkers(o.workerIdle)
	}
	if o.metrics != "" {
		stop, err := serveMetrics(o.metrics, ctl, log)
		if err != nil {
			fmt.Fprintln(os.Stderr, "xpraproxy:", err)
			return 1
		}
		defer stop()
	}
	if o.profileDir != "" {
		stop, err := startProfiles(o.profileDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "xpraproxy:", err)
			return 1
		}
		defer stop()
	}
	sd := newNotifier(log) // nil without NOTIFY_SOCKET (systemd.go)
	ctl.sd = sd
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		log.Info("stopping", "signal", s.String())
		sd.Stopping()
		ctl.Shutdown()
	}()
	// Each logs its outcome.
	onSignal(syscall.SIGHUP, srv, func() { ctl.Reload() })
	onSignal(syscall.SIGUSR2, srv, func() { ctl.Upgrade() })
	notifying := make(chan struct{})
	defer close(notifying)
	go sd.serve(srv, ctl.serviceStatus, notifying)
	tuning := make(chan struct{})
	defer close(tuning)
	go runMemTuner(srv, o.burstGC, tuning)
	go func() {
		<-srv.Ready()
		log.Info("xpraproxy ready", "version", relay.Version, "display", o.display, "pid", os.Getpid())
		if succ != nil {
			if err := succ.Ready(); err != nil {
				log.Warn("upgrade: cannot tell the old process this one serves", "err", err)
			}
			adopted, refused := succ.TakeSessions(func(acct *authn.Account, h *loop.HandedSession) error {
				if ctl.sup != nil {
					// As root a session relays in its account's worker,
					// never in this process.
					if acct == nil {
						h.Close()
						return errors.New("a root proxy relays in its workers: no account")
					}
					return ctl.sup.Resume(*acct, srv.NewID(), h)
				}
				return srv.Resume(h)
			})
			log.Info("upgrade: sessions taken over", "adopted", adopted, "refused", refused)
		}
	}()
	err = srv.Run()
	sd.Stopping() // also when a stop request, not a signal, ended it
	if err != nil {
		log.Error("proxy failed", "err", err)
		sd.Status("failed: " + err.Error())
		return fail(1, err)
	}
	return 0
}

// onSignal runs do for each sig, once the server serves, one at a time.
func onSignal(sig os.Signal, srv *loop.Server, do func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, sig)
	go func() {
		for range c {
			<-srv.Ready()
			do()
		}
	}()
}

// embeddedDefault is what `xpraproxy proxy` with no bind or auth option
// runs: TCP on 127.0.0.1:14500, authenticated against a sqlite database in
// the user's config directory, created on first run.
func embeddedDefault(o *proxyOptions) error {
	dir, err := os.UserConfigDir()
	if err != nil {
		return err
	}
	dir = filepath.Join(dir, "xpraproxy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	db := filepath.Join(dir, "users.sdb")
	if _, err := os.Stat(db); os.IsNotExist(err) {
		s, err := sqliteauth.Create(db)
		if err != nil {
			return err
		}
		s.Close()
		fmt.Fprintf(os.Stderr, "xpraproxy: created the user database %s\n", db)
	}
	if s, err := sqliteauth.Open(db); err == nil {
		users, _ := s.Users()
		s.Close()
		if len(users) == 0 {
			fmt.Fprintf(os.Stderr, "xpraproxy: no users yet; add one that reaches a session with:\n"+
				"  xpraproxy sqlite %s add USER PASSWORD \"\" \"\" tcp://HOST:PORT/\n"+
				"then attach with: xpra attach tcp://USER:PASSWORD@%s/\n", db, defaultBind)
		}
	}
	b, err := parseBind("tcp", defaultBind)
	if err != nil {
		return err
	}
	b.auth = []authn.Spec{{Name: "sqlite", Options: map[string]string{"filename": db}}}
	o.binds = append(o.binds, b)
	return nil
}

// daemonize re-runs the command in the background (--daemon=no, a new
// session, output to the log file) and returns once it is started.
func daemonize(o *proxyOptions, args []string) int {
	logFile := o.logFile
	if logFile == "" {
		logFile = filepath.Join(ownSocketDir(o), "xpraproxy-"+strings.TrimPrefix(o.display, ":")+".log")
	}
	var child []string
	for _, a := range args {
		if a == "--daemon" || strings.HasPrefix(a, "--daemon=") {
			continue
		}
		child = append(child, a)
	}
	child = append([]string{"proxy"}, child...)
	child = append(child, "--daemon=no", "--log-file="+logFile)
	if !slices.Contains(child, o.display) {
		child = append(child, o.display)
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "xpraproxy:", err)
		return 1
	}
	cmd := exec.Command(self, child...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "xpraproxy:", err)
		return 1
	}
	fmt.Printf("xpraproxy started in the background, pid %d, log %s\n", cmd.Process.Pid, logFile)
	return 0
}

// ownSocketDir is where the proxy's own $HOSTNAME-$DISPLAY socket goes:
// --socket-dir, else the first --socket-dirs, else the first default
// directory that this user can write to.
func ownSocketDir(o *proxyOptions) string {
	if o.socketDir != "" {
		return o.socketDir
	}
	dirs := o.socketDirs
	if len(dirs) == 0 {
		dirs = defaultSocketDirs()
	}
	for _, d := range dirs {
		d = route.ExpandDir(d, nil)
		// Existing is not enough: /run/xpra is root's.
		if err := os.MkdirAll(d, 0o700); err == nil && syscall.Access(d, 2 /* W_OK */) == nil {
			return d
		}
	}
	return os.TempDir()
}

// buildServer makes the reactor and its control plane. As root, every
// listener hands authenticated clients to privilege-separated workers.
func buildServer(o *proxyOptions, log *slog.Logger, logOut io.Writer) (*loop.Server, *control, error) {
	sockDir := ownSocketDir(o)
	if err := os.MkdirAll(sockDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("socket dir: %w", err)
	}
	var templates []string
	if o.socketDir != "" {
		templates = append(templates, o.socketDir)
	}
	if len(o.socketDirs) > 0 {
		templates = append(templates, o.socketDirs...)
	} else {
		templates = append(templates, defaultSocketDirTemplates...)
	}
	me, _ := user.Current()
	dirs := make([]string, len(templates))
	for i := range templates {
		dirs[i] = route.ExpandDir(templates[i], me)
	}
	hostname := route.SocketHostname()
	base := relay.NewConfig(o.limits(), relay.Process{Hostname: hostname, UID: os.Getuid(), SocketDirs: dirs, Log: log})
	base.OwnDisplay = o.display
	if o.throttle {
		base.Throttle = relay.NewThrottle(log)
	}
	pools := route.Pools{}
	for _, spec := range o.pools {
		p, err := route.ParsePool(spec)
		if err != nil {
			return nil, nil, err
		}
		pools[p.Name] = p
		targets := p.Displays()
		for i := range targets {
			targets[i] = route.RedactDisplay(targets[i])
		}
		log.Info("target pool", "pool", p.Name, "policy", p.Policy, "targets", strings.Join(targets, ","))
	}
	if len(pools) > 0 {
		base.Pools = pools
	}
	// What sessions obey (normalised) is what info shows and workers get.
	limits := base.Limits
	ctl := &control{display: o.display, limits: limits, opts: o, templates: templates}
	ctl.setPools(pools, o)
	if err := setupFleet(o, &base, ctl, log); err != nil {
		return nil, nil, err
	}
	if os.Geteuid() != 0 {
		pool, err := videoPool(o.video, log)
		if err != nil {
			return nil, nil, err
		}
		if pool != nil {
			// Not a nil *gpu.Pool in the interface: the relay reads a
			// non-nil Video as "offer proxy video".
			base.Video = pool
		}
	}
	if os.Geteuid() == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, nil, err
		}
		wcfg := workerConfig(o, limits, templates, hostname)
		ctl.sup = &privsep.Supervisor{
			Exe:           exe,
			PerConnection: o.workers == "connection",
			IdleTimeout:   o.workerIdle,
			Output:        logOut,
			LogFormat:     o.logFormat,
			Log:           log,
			Config:        wcfg,
			Pools:         pools,
			// Only a session registry reads the records.
			NoRecords: o.registry == "",
		}
		base.HandOff = ctl.sup.HandOff
		limit := base.UserLimit
		ctl.sup.OnEnded = func(id uint64) {
			ctl.releasePool(id)
			if limit != nil {
				limit.Release(id)
			}
		}
		base.UserSocketDirs = templates
	}
	ctl.base, ctl.sockDir, ctl.hostname = base, sockDir, hostname
	listeners, err := listenersFor(o, base, ctl, log)
	if err != nil {
		return nil, nil, err
	}
	listeners, quics := splitQUIC(listeners)
	conns, logins := o.connectionCaps()
	srv := loop.New(listeners, loop.Options{Loops: o.loops, MaxBufferTotal: o.maxTotal, ReadSize: o.readSize, Log: log,
		MaxConnections: conns, MaxLoginConnections: logins, MaxLoginsPerSource: o.maxPerSource,
		WSRequireMask: o.wsRequireMask})
	log.Info("connection caps", "connections", conns, "logging-in", logins, "per-address", o.maxPerSource)
	ctl.srv, ctl.log = srv, log
	if ctl.quic, err = openQUIC(srv, quics, o, log); err != nil {
		return nil, nil, err
	}
	return srv, ctl, nil
}

// workerConfig is what a root proxy's workers are started with.
func workerConfig(o *proxyOptions, limits relay.Limits, templates []string, hostname string) privsep.WorkerConfig {
	wcfg := privsep.WorkerConfig{
		Limits:         limits,
		MaxBufferTotal: o.maxTotal,
		ReadSize:       o.readSize,
		Loops:          o.loops,
		SocketDirs:     templates,
		Hostname:       hostname,
		Video:          o.video,
		BurstGCPercent: o.burstGC,
	}
	if pct, ok := o.gcTarget(lookupEnv); ok {
		wcfg.GCPercent = &pct
	}
	return wcfg
}

// lookupEnv is the process environment, as gcTarget reads it.
func lookupEnv(k string) (string, bool) { return os.LookupEnv(k) }

// startProfiles writes a CPU profile of the whole run and, at the end, a
// heap profile into dir (--profile-dir, for the load benchmarks); with
// XPRAPROXY_TRACE=1 also an execution trace of the whole run (trace.out:
// where a round trip waits, for `go tool trace`), which costs latency
// itself; with XPRAPROXY_TRACE=flight a flight recorder keeps the last
// seconds and SIGUSR1 writes them (trace-flight.out): the bench sends it
// at the end of a measured phase, so the trace holds that phase alone.
func startProfiles(dir string) (func(), error) {
	f, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	var tf *os.File
	switch os.Getenv("XPRAPROXY_TRACE") {
	case "1":
		if tf, err = os.Create(filepath.Join(dir, "trace.out")); err == nil {
			if err = trace.Start(tf); err != nil {
				tf.Close()
				tf = nil
			}
		}
	case "flight":
		fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: 5 * time.Second, MaxBytes: 256 << 20})
		if err := fr.Start(); err == nil {
			usr1 := make(chan os.Signal, 1)
			signal.Notify(usr1, syscall.SIGUSR1)
			go func() {
				for range usr1 {
					if out, err := os.Create(filepath.Join(dir, "trace-flight.out")); err == nil {
						fr.WriteTo(out)
						out.Close()
					}
				}
			}()
		}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		if tf != nil {
			trace.Stop()
			tf.Close()
		}
		if h, err := os.Create(filepath.Join(dir, "heap.pprof")); err == nil {
			pprof.Lookup("heap").WriteTo(h, 0)
			h.Close()
		}
	}, nil
}
