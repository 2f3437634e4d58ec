package main

// Upgrade (docs/upgrade.md): SIGUSR2 and `xpraproxy upgrade` start the
// binary at this one's path with the same arguments and hand it the
// listening sockets; once it serves, this process stops accepting, hands
// it every relaying session it can (step 2: tcp, unix and WebSocket
// clients; as root, its workers' sessions), and drains the rest.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/privsep"
	"github.com/xpraproxy/xpraproxy/relay"
)

// upgradeReadyTimeout bounds how long the new process may take to serve.
const upgradeReadyTimeout = 30 * time.Second

// upgradeReason is what a drained session's client is told.
const upgradeReason = "the proxy was upgraded"

// Upgrade starts the successor and, once it serves, drains this process
// in the background; it implements relay.Control. On failure nothing
// changed. Safe from any goroutine but a loop.
func (c *control) Upgrade() (string, error) {
	if !c.upgrading.CompareAndSwap(false, true) {
		return "", errors.New("an upgrade is already in progress")
	}
	u, err := c.startSuccessor()
	if err != nil {
		c.upgrading.Store(false)
		c.log.Error("upgrade failed; this process keeps serving", "err", err)
		return "", err
	}
	// Closing a listener can wait for an accept in progress: not on the
	// request's way (drain waits for it). Logins the old process still
	// accepts meanwhile drain here.
	go c.srv.StopAccepting()
	start := time.Now()
	var handed, kept int
	if c.sup != nil {
		// As root the sessions relay in workers: each hands its own,
		// through this process, to a worker of the same account in the
		// new one (one at a time over the conduit).
		var mu sync.Mutex
		handed, kept = c.sup.HandOver(func(acct authn.Account, h *loop.HandedSession) error {
			mu.Lock()
			defer mu.Unlock()
			return u.HandSessionAs(&acct, h)
		})
	} else {
		handed, kept = c.srv.HandOver(u.HandSession)
	}
	took := time.Since(start)
	c.log.Info("upgrade: sessions handed over", "handed", handed, "kept", kept, "took", took.Round(time.Millisecond).String())
	u.Close()
	c.log.Info("upgrade: the new process serves; this one stops accepting and drains its sessions",
		"new-pid", u.PID, "drain-timeout", c.opts.drainTimeout)
	go c.drain(c.opts.drainTimeout)
	return fmt.Sprintf("new process %d serves; %d sessions handed over in %.1fms; process %d drains %d",
		u.PID, handed, float64(took.Microseconds())/1e3, os.Getpid(), kept), nil
}

func (c *control) startSuccessor() (*privsep.Upgrade, error) {
	exe, err := os.Executable() // the path, which now holds the new binary
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	files, err := c.srv.ListenerFiles()
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	defer func() {
		for _, f := range files {
			f.File.Close()
		}
	}()
	socks := make([]privsep.Socket, len(files))
	for i, f := range files {
		socks[i] = privsep.Socket{Network: f.Network, Address: f.Address, Kind: f.Kind, File: f.File}
	}
	u, err := privsep.StartUpgrade(exe, append([]string{"proxy"}, c.args...), os.Environ(), socks, os.Stderr, upgradeReadyTimeout)
	if err != nil {
		return nil, err
	}
	go func() {
		// Reaped already; a successor dying while this process drains
		// is worth a line.
		if err := <-u.Exited(); err != nil {
			c.log.Error("upgrade: the new process exited", "pid", u.PID, "status", err.Error())
		}
	}()
	// The new process is the service now: systemd would otherwise take
	// this one's exit for the service's.
	c.sd.MainPID(u.PID)
	return u, nil
}

// drain: the successor serves the listeners; this process ends when its
// sessions have, or after timeout, telling the rest why.
func (c *control) drain(timeout time.Duration) {
	c.srv.StopAccepting()
	deadline := time.Now().Add(timeout)
	for c.liveSessions() > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := c.liveSessions(); n > 0 {
		c.log.Info("upgrade: drain timeout; ending the sessions left", "sessions", n)
	}
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if c.sup != nil {
			c.sup.CloseWith(5*time.Second, relay.CloseUpgradeDrain, upgradeReason)
		}
		if err := c.srv.ShutdownFor(ctx, relay.CloseUpgradeDrain, upgradeReason); err != nil {
			c.log.Warn("stopping", "err", err)
		}
	})
}

// liveSessions counts this process's sessions, and as root those its
// workers relay.
func (c *control) liveSessions() int {
	n := int(c.srv.Sessions())
	if c.sup != nil {
		n += c.sup.Routed()
	}
	return n
}
