package relay

// Config and the values it bounds: what every session of a listener shares.

import (
	"log/slog"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/route"
)

// Config is shared by the sessions of one listener.
type Config struct {
	// Limits are the operator's values, the same on every road (an
	// in-process proxy, a root proxy's workers).
	Limits
	// Modules authenticate, in order; all must pass.
	Modules []authn.Module
	// Local session discovery (modules without explicit displays).
	SocketDirs []string
	Hostname   string
	OwnDisplay string
	UID        int
	// Encrypted marks TLS or local links, where xor digests are allowed.
	Encrypted bool
	Log       *slog.Logger
	// Access receives each session's access record when it ends, once,
	// on the session's loop or from a failed handoff's goroutine; it
	// must not block. nil: the record is a line of Log.
	Access func(AccessRecord)
	// Control answers info and stop requests about the whole proxy and
	// its connections; nil: only this session's info.
	Control Control
	// Local marks unix listeners: only they may stop the proxy, as xpra's
	// STOP_PROXY_SOCKET_TYPES.
	Local bool
	// HandOff, when set (the proxy runs as root), moves each logged-in
	// client to a worker running as the target account instead of
	// relaying here. UserSocketDirs are then the socket directory
	// templates ($UID, ~) expanded for that account to find its sessions.
	HandOff        HandOffFunc
	UserSocketDirs []string
	// Video, when set, is the encoder pool of proxy video: servers are
	// offered it and their raw-RGB draws are compressed here (docs/gpu.md).
	// A nil *gpu.Pool in it is not "no pool": leave it nil instead.
	Video VideoPool
	// Pools are the target pools that `pool:NAME` displays name.
	Pools route.Pools
	// Track, when set, gives the PoolTracker of a session handed over by
	// another process (pool is "" for a session of no pool): a root
	// proxy's worker reports through it to the main process, which holds
	// the pools and the sessions' records.
	Track func(pool string) PoolTracker
	// Fleet, when set, is the session registry's view of the other
	// instances: their counts per pool member and users' affinities.
	Fleet route.Fleet
	// UserLimit, when set, holds --max-user-sessions.
	UserLimit UserLimit
	// StartPrograms are Limits.StartXpra with their generations, learnt
	// once; nil: "xpra" on PATH.
	StartPrograms *XpraPrograms
	// Throttle, when set, refuses logins from sources and usernames with
	// recent failures.
	Throttle *Throttle
	// Connects, when set, bounds the dials in progress to each target.
	Connects *ConnectLimiter
	// Generations, when set, remembers which xpra generation each target
	// is, so that a client that cannot use one is told why without a
	// dial and pools prefer the members it can use.
	Generations *Generations
}

// PoolTracker is told which member of a pool a session reached and which
// it found dead on the way; *route.Pool is one (in-process), a root
// proxy's worker has one that reports to the main process. Both run off
// the loop and may block briefly.
type PoolTracker interface {
	// Use: session id relays to display.
	Use(id uint64, display string)
	// Failed: display did not answer; id moves on to next ("" for none).
	Failed(id uint64, display, next string)
}

// Process is what a Config takes from the process its sessions run in,
// beside the operator's Limits: the same Limits give an in-process proxy
// and a root proxy's worker the same sessions.
type Process struct {
	// Hostname names local sessions' sockets ($HOSTNAME-$DISPLAY).
	Hostname string
	// UID is the process's uid, whose local sessions count.
	UID int
	// SocketDirs are where local sessions are found (expanded).
	SocketDirs []string
	Log        *slog.Logger
	// Access receives each session's access record when it ends
	// (docs/accesslog.md); nil: the record is a line of Log.
	Access func(AccessRecord)
}

// NewConfig is the one way the proxy builds a Config: l normalised
// (Limits.Normalized) and everything derived from it made once, so that
// a new option is one Limits field and one row in the option table. The
// caller adds what only its process has (modules, handoff, pools, video).
func NewConfig(l Limits, p Process) Config {
	l = l.Normalized()
	return Config{
		Limits:        l,
		Hostname:      p.Hostname,
		UID:           p.UID,
		SocketDirs:    p.SocketDirs,
		Log:           p.Log,
		Access:        p.Access,
		Connects:      &ConnectLimiter{PerTarget: l.MaxTargetConnects},
		Generations:   &Generations{},
		StartPrograms: &XpraPrograms{Paths: l.StartXpra},
	}
}

// nobodyUID is Debian's nobody, never given sessions of its own.
const nobodyUID = 65534

// Bounds before login that no option changes.
const (
	// LoginPacketValues bounds the values one packet decodes to before
	// login: a real 3.1.3 hello has about 6,000 (6.5's 740), and a list
	// of small integers decodes to 16 bytes per byte received.
	LoginPacketValues = 1 << 16
	// MaxUsernameLength bounds a hello's username (xpra's are short).
	MaxUsernameLength = 256
)

func (c *Config) loginPacketSize() int {
	if c.LoginPacketSize > 0 {
		return min(c.LoginPacketSize, max(c.MaxPacketSize, 1))
	}
	if c.MaxPacketSize > 0 {
		return min(DefaultLoginPacketSize, c.MaxPacketSize)
	}
	return DefaultLoginPacketSize
}

func (c *Config) connectBuffer() int {
	if c.ConnectBuffer > 0 {
		return c.ConnectBuffer
	}
	return DefaultConnectBuffer
}
