package main

// Reload (docs/reload.md): SIGHUP, `systemctl reload` and `xpraproxy
// reload` read the configuration again and apply what can change while
// sessions relay; the rest is named as needing a restart.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// prepareOptions fills what the proxy derives from options before it
// builds anything: the default display and, without any bind or
// authentication option, the embedded default. At start and at reload.
func prepareOptions(o *proxyOptions) error {
	if o.display == "" {
		o.display = defaultDisplay
	}
	if len(o.binds) == 0 && len(o.tcpAuth) == 0 && len(o.auth) == 0 {
		return embeddedDefault(o)
	}
	return nil
}

// Reload reads the options again and applies them; it implements
// relay.Control. Relayed sessions keep the configuration they logged in
// with. On any error nothing changes and the old configuration serves.
// Safe from any goroutine but a loop; reloads run one at a time.
func (c *control) Reload() (string, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	c.sd.Reloading()
	what, err := c.reload()
	defer c.sd.Ready(c.serviceStatus())
	if err != nil {
		c.log.Error("reload refused; the previous configuration keeps serving", "err", err)
		return "", fmt.Errorf("reload refused: %w", err)
	}
	c.log.Info("reloaded", "changes", what)
	return what, nil
}

func (c *control) reload() (string, error) {
	o, err := c.load()
	if err != nil {
		return "", err
	}
	c.act.bindTo(o) // systemd's sockets serve on, as at start
	if err := prepareOptions(o); err != nil {
		return "", err
	}
	base := c.base
	base.Limits = o.limits().Normalized()
	switch {
	case o.throttle && base.Throttle == nil:
		base.Throttle = relay.NewThrottle(c.log)
	case !o.throttle:
		base.Throttle = nil
	}
	pools, err := c.nextPools(o)
	if err != nil {
		return "", err
	}
	base.Pools = nil
	if len(pools) > 0 {
		base.Pools = pools
	}
	listeners, err := listenersFor(o, base, c, c.log)
	if err != nil {
		return "", err
	}
	// QUIC listeners keep what they started with (docs/quic.md): the
	// new ones' modules are not used.
	listeners, quics := splitQUIC(listeners)
	closeModules(quics, nil, 0)
	old := c.srv.Listeners()
	res, err := c.srv.Reload(listeners)
	if err != nil {
		closeModules(listeners, nil, 0)
		return "", err
	}
	// A login that began before the reload still uses the old modules
	// until its deadline.
	closeModules(old, listeners, c.base.LoginTimeout+c.base.ChallengeTimeout+time.Second)

	// Committed: from here on nothing fails.
	restart := c.restartOnly(o)
	c.mu.Lock()
	c.base, c.limits, c.opts = base, base.Limits, o
	c.setPools(pools, o)
	c.mu.Unlock()
	if pct, ok := o.gcTarget(lookupEnv); ok {
		debug.SetGCPercent(pct)
	}
	if c.sup != nil {
		c.sup.Reconfigure(workerConfig(o, base.Limits, c.templates, c.hostname))
		c.sup.SetPools(c.allPools())
	}
	var parts []string
	add := func(name string, v []string) {
		if len(v) > 0 {
			parts = append(parts, name+" "+strings.Join(v, ","))
		}
	}
	add("listeners kept", res.Kept)
	add("added", res.Added)
	add("removed", res.Removed)
	add("needs a restart to change", restart)
	return strings.Join(parts, "; "), nil
}

// closeModules closes, after delay, the modules of ls that keep do not
// use (database pools: io.Closer).
func closeModules(ls, keep []loop.Listener, delay time.Duration) {
	kept := map[io.Closer]bool{}
	for _, l := range keep {
		for _, m := range listenerModules(l) {
			if cl, ok := m.(io.Closer); ok {
				kept[cl] = true
			}
		}
	}
	var closers []io.Closer
	for _, l := range ls {
		for _, m := range listenerModules(l) {
			if cl, ok := m.(io.Closer); ok && !kept[cl] {
				kept[cl] = true
				closers = append(closers, cl)
			}
		}
	}
	if len(closers) == 0 {
		return
	}
	time.AfterFunc(delay, func() {
		for _, cl := range closers {
			cl.Close()
		}
	})
}

// restartOnly names the options that differ from those the proxy started
// with but apply only at start.
func (c *control) restartOnly(o *proxyOptions) []string {
	was := c.opts
	var out []string
	check := func(name string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			out = append(out, name)
		}
	}
	check("display", was.display, o.display)
	check("socket-dir", was.socketDir, o.socketDir)
	check("socket-dirs", was.socketDirs, o.socketDirs)
	check("log-file", was.logFile, o.logFile)
	check("daemon", was.daemon, o.daemon)
	check("event-loops", was.loops, o.loops)
	check("max-buffer-total", was.maxTotal, o.maxTotal)
	check("read-size", was.readSize, o.readSize)
	check("max-connections", was.maxConns, o.maxConns)
	check("max-login-connections", was.maxLogins, o.maxLogins)
	check("max-logins-per-source", was.maxPerSource, o.maxPerSource)
	check("websocket-require-mask", was.wsRequireMask, o.wsRequireMask)
	check("proxy-workers", was.workers, o.workers)
	check("metrics", was.metrics, o.metrics)
	check("proxy-video-encoders", was.video, o.video)
	check("session-registry", was.registry != "", o.registry != "") // the URI is a secret
	check("registry-name", was.registryName, o.registryName)
	check("max-user-sessions", was.maxUserSessions, o.maxUserSessions)
	return out
}

// nextPools are the pools o names: a pool whose definition did not
// change is the same object, so its counts and liveness carry over.
func (c *control) nextPools(o *proxyOptions) (route.Pools, error) {
	next := route.Pools{}
	for _, spec := range o.pools {
		p, err := route.ParsePool(spec)
		if err != nil {
			return nil, err
		}
		if old := c.pools[p.Name]; old != nil && c.poolSpecs[p.Name] == spec {
			p = old
		}
		next[p.Name] = p
	}
	return next, nil
}

// setPools makes pools the current ones (under c.mu): the probes follow
// them, and pools a reload dropped stay known until their sessions have
// released them (allPools).
func (c *control) setPools(pools route.Pools, o *proxyOptions) {
	for name, p := range c.pools {
		if pools[name] != p {
			c.retiredPools = append(c.retiredPools, p)
		}
	}
	c.pools = pools
	c.poolSpecs = map[string]string{}
	for _, spec := range o.pools {
		name, _, _ := strings.Cut(spec, ":")
		c.poolSpecs[name] = spec
	}
	if c.stopProbes != nil {
		close(c.stopProbes)
	}
	c.stopProbes = make(chan struct{})
	go pools.ProbeEvery(o.poolProbe, c.stopProbes)
}

// allPools are the current pools and those reloads retired, for the
// sessions they still hold.
func (c *control) allPools() route.Pools {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := route.Pools{}
	for i, p := range c.retiredPools {
		all[fmt.Sprintf("%s (retired %d)", p.Name, i)] = p
	}
	for name, p := range c.pools {
		all[name] = p
	}
	return all
}

// releasePool releases a session's place in whichever pool holds it.
func (c *control) releasePool(id uint64) {
	c.allPools().Release(id)
}

// load reads the options as at start: the conf files as they are now,
// the environment and the same command line. Errors name the file and
// line, secrets redacted.
func (c *control) load() (*proxyOptions, error) {
	o, prov, err := loadProxyOptions(c.args, os.Getenv, systemConfDir(os.Getenv))
	if err != nil {
		return nil, errors.New(redactText(err.Error()))
	}
	if keys := prov.ignoredKeys(); len(keys) > 0 {
		c.log.Info("xpra options in the conf files have no meaning for a proxy; ignored", "options", strings.Join(keys, " "))
	}
	return o, nil
}

// currentPools is what info shows.
func (c *control) currentPools() route.Pools {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pools
}
