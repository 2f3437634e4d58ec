package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// listen serves stop requests for this instance's sessions: NOTIFY on the
// control channel with "INSTANCE/ID". It holds its own connection and
// comes back after the database does.
func (r *Registry) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		r.cfg.Log.Debug("session registry: control channel lost", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.Interval):
		}
	}
}

func (r *Registry) listenOnce(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pgx.Connect(cctx, r.cfg.URI)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+controlChannel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		name, id, ok := parseSession(n.Payload)
		if !ok || name != r.cfg.Name {
			continue
		}
		found := r.cfg.Stop(id)
		r.cfg.Log.Info("session stopped through the session registry", "session", id, "found", found)
	}
}

// parseSession reads "INSTANCE/ID" (an instance name may hold '/').
func parseSession(s string) (string, uint64, bool) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return "", 0, false
	}
	id, err := strconv.ParseUint(strings.TrimPrefix(s[i+1:], "proxy-"), 10, 64)
	return s[:i], id, err == nil
}

// Session is one relayed session of the fleet, for `xpraproxy sessions`.
type Session struct {
	Instance      string
	ID            uint64
	User, Display string
	Pool, Client  string
	Started       time.Time
	Bytes         int64
	Active        time.Time
}

// Name is how `xpraproxy stop` names the session: INSTANCE/ID.
func (s Session) Name() string { return s.Instance + "/" + strconv.FormatUint(s.ID, 10) }

// Sessions lists every session of every live instance (expiry: how old a
// heartbeat may be).
func Sessions(ctx context.Context, uri string, expiry time.Duration) ([]Session, error) {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, allSessions, expiry.Seconds())
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	var out []Session
	var s Session
	var id int64
	_, err = pgx.ForEachRow(rows, []any{&s.Instance, &id, &s.User, &s.Display, &s.Pool, &s.Client, &s.Started, &s.Bytes, &s.Active}, func() error {
		s.ID = uint64(id)
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return out, nil
}

// ErrNoSession: the registry has no live session by that name.
var ErrNoSession = errors.New("no such session in the registry")

// Stop asks the instance that relays session name ("INSTANCE/ID") to end
// it, and waits until its row is gone (at most wait).
func Stop(ctx context.Context, uri, name string, expiry, wait time.Duration) error {
	inst, id, ok := parseSession(name)
	if !ok {
		return fmt.Errorf("registry: %q is not INSTANCE/ID (see xpraproxy sessions)", name)
	}
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	defer conn.Close(context.Background())
	exists := func() (bool, error) {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM xpraproxy_sessions s JOIN xpraproxy_instances i ON i.id = s.instance
WHERE s.instance = $1 AND s.id = $2 AND i.heartbeat >= now() - make_interval(secs => $3)`, inst, int64(id), expiry.Seconds()).Scan(&n)
		return n > 0, err
	}
	if ok, err := exists(); err != nil {
		return fmt.Errorf("registry: %w", err)
	} else if !ok {
		return ErrNoSession
	}
	if _, err := conn.Exec(ctx, "SELECT pg_notify($1, $2)", controlChannel, inst+"/"+strconv.FormatUint(id, 10)); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		if ok, err := exists(); err == nil && !ok {
			return nil
		}
	}
	return fmt.Errorf("registry: %s was asked to stop %d but still lists it after %v", inst, id, wait)
}
