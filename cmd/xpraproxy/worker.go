package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/privsep"
)

// workerMain is `xpraproxy worker`: started by a root proxy for one
// account, it drops to that account before anything else and relays the
// connections handed to it (docs/privsep.md). Not for direct use.
func workerMain(args []string) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	uid := fs.String("uid", "", "uid to run as")
	gid := fs.String("gid", "", "gid to run as")
	groups := fs.String("groups", "", "supplementary groups")
	format := fs.String("log-format", "text", "the main process's --log-format")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	acct, err := privsep.ParseAccount(*uid, *gid, *groups)
	if err == nil {
		err = privsep.Drop(acct)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "xpraproxy worker:", err)
		return 1
	}
	// Until the config arrives: the proxy's own default (the main
	// process's --gc-percent comes with it, privsep.WorkerConfig).
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	h, err := newLogHandler(*format, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xpraproxy worker:", err)
		return 1
	}
	log := slog.New(h).With("worker", os.Getpid(), "uid", acct.UID)
	// The same memory tuning as the main process's (memtune.go), for as
	// long as the worker lives.
	tune := func(srv *loop.Server, cfg privsep.WorkerConfig) { go runMemTuner(srv, cfg.BurstGCPercent, nil) }
	if err := privsep.RunWorker(log, tune); err != nil {
		log.Error("worker failed", "err", err)
		return 1
	}
	return 0
}
