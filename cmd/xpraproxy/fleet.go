package main

// The fleet (docs/fleet.md): the session registry an instance writes to,
// the per-user limit, and the `sessions` command.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/registry"
	"github.com/xpraproxy/xpraproxy/relay"
)

// setupFleet fills base's Fleet and UserLimit: a registry when
// --session-registry names one, else an in-memory --max-user-sessions.
func setupFleet(o *proxyOptions, base *relay.Config, ctl *control, log *slog.Logger) error {
	if o.registry == "" {
		if o.maxUserSessions > 0 {
			base.UserLimit = &registry.Local{Max: o.maxUserSessions}
		}
		return nil
	}
	name := o.registryName
	addr := ""
	for _, b := range o.binds {
		if b.network == "tcp" {
			addr = b.address
			break
		}
	}
	if name == "" {
		host, _ := os.Hostname()
		name = host + "/" + addr
		if addr == "" {
			name = host + "/" + strconv.Itoa(os.Getpid())
		}
	}
	reg, err := registry.Open(registry.Config{URI: o.registry, Name: name, Address: addr,
		Interval: o.registryInterval, Expiry: o.registryExpiry, MaxUserSessions: o.maxUserSessions,
		Records: func() ([]registry.Record, bool) {
			if ctl.sup != nil {
				return registryRecords(ctl.sup.Records())
			}
			if ctl.srv == nil {
				return nil, false
			}
			return registryRecords(ctl.srv.Records())
		},
		Stop: ctl.StopSession, Log: log})
	if err != nil {
		return fmt.Errorf("--session-registry: %w", err)
	}
	base.Fleet = reg
	if o.maxUserSessions > 0 {
		base.UserLimit = reg
	}
	ctl.reg = reg
	log.Info("session registry", "instance", name, "interval", o.registryInterval, "expiry", o.registryExpiry,
		"max-user-sessions", o.maxUserSessions)
	go reg.Run(context.Background())
	return nil
}

// registryRecords converts the relay's records to the registry's (the
// same fields: registry/ does not import relay/), once per flush.
func registryRecords(recs []relay.Record, complete bool) ([]registry.Record, bool) {
	out := make([]registry.Record, len(recs))
	for i, r := range recs {
		out[i] = registry.Record(r)
	}
	return out, complete
}

// fleetInfo is what `xpra info` shows of the fleet: the live instances
// and their sessions, as of the registry's last flush.
func fleetInfo(reg *registry.Registry) frame.Dict {
	d := frame.NewDict("instance", reg.Name(), "registry-connected", reg.Healthy())
	total := 0
	instances := frame.NewDict()
	for _, in := range reg.Instances() {
		instances.Set(in.Name, frame.NewDict("address", in.Address, "sessions", in.Sessions,
			"started", in.Started.Unix(), "heartbeat", in.Heartbeat.Unix()))
		total += in.Sessions
	}
	d.Set("instances", instances)
	d.Set("sessions", total)
	return d
}

// sessionsMain is `xpraproxy sessions --registry=URI`: every session of
// every live instance.
func sessionsMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sessions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	uri := fs.String("registry", os.Getenv("XPRAPROXY_REGISTRY"), "the session registry (postgresql://...)")
	expiry := fs.Duration("expiry", 15*time.Second, "an instance whose heartbeat is older is gone")
	if err := fs.Parse(args); err != nil || *uri == "" {
		fmt.Fprintln(stderr, "usage: xpraproxy sessions --registry=postgresql://USER:PASS@HOST/DB")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all, err := registry.Sessions(ctx, *uri, *expiry)
	if err != nil {
		fmt.Fprintln(stderr, "xpraproxy sessions:", err)
		return 1
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SESSION\tUSER\tDISPLAY\tPOOL\tCLIENT\tSTARTED\tBYTES\tLAST ACTIVITY")
	for _, s := range all {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Name(), s.User, s.Display, s.Pool, s.Client,
			s.Started.Format(time.RFC3339), s.Bytes, s.Active.Format(time.RFC3339))
	}
	w.Flush()
	fmt.Fprintf(stdout, "%d sessions\n", len(all))
	return 0
}

// registryStop is `xpraproxy stop INSTANCE/ID --registry=URI`.
func registryStop(name, uri string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := registry.Stop(ctx, uri, name, 15*time.Second, 15*time.Second); err != nil {
		fmt.Fprintln(stderr, "xpraproxy stop:", err)
		return 1
	}
	fmt.Fprintln(stdout, "stopped", name)
	return 0
}
