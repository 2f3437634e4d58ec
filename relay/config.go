package relay

// Config and the values it bounds: what every session of a listener shares.

import (
	"log/slog"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/gpu"
)

// Config is shared by the sessions of one listener.
type Config struct {
	// Modules authenticate, in order; all must pass.
	Modules []authn.Module
	// Local session discovery (modules without explicit displays).
	SocketDirs []string
	Hostname   string
	OwnDisplay string
	UID        int
	// Limits.
	LoginTimeout     time.Duration // hello and authentication (xpra: 31 s)
	ChallengeTimeout time.Duration // after a challenge (xpra: 120 s)
	ConnectTimeout   time.Duration // backend connect and handshake (xpra: 20 s)
	IdleTimeout      time.Duration // no traffic either way while relaying; 0: never
	MaxPacketSize    int           // per frame, handshake and inspected packets
	MaxSessionBuffer int           // bytes buffered in both directions before the session ends
	// Encrypted marks TLS or local links, where xor digests are allowed.
	Encrypted bool
	Log       *slog.Logger
	// ServerInfo, when set, adds the proxy's own figures (sessions,
	// memory) to the info a session reports.
	ServerInfo func() frame.Dict
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
	// OnHandshake, when set, counts handshake outcomes (metrics).
	OnHandshake func(result string)
	// Video, when set, is the encoder pool of proxy video: servers are
	// offered it and their raw-RGB draws are compressed here (docs/gpu.md).
	Video *gpu.Pool
	// Pools are the target pools that `pool:NAME` displays name.
	Pools Pools
	// PingInterval is how often the proxy pings both peers itself (xpra's
	// proxy: 5 s); 0: never.
	PingInterval time.Duration
	// StartSessions lets clients start new sessions through the proxy
	// (xpra's --proxy-start-sessions), at most MaxStartedSessions live
	// sessions per user.
	StartSessions      bool
	MaxStartedSessions int
	// StartAsProxyUser lets a proxy that is not root start sessions as
	// its own account (which can read its user database and keys): off
	// unless the operator says so.
	StartAsProxyUser bool
	// StartCommands are the commands a client may ask a new session to
	// run (start, start-child, ... compared whole; "*": any); StartEnv
	// the environment variables it may set. Empty: none.
	StartCommands, StartEnv []string
	// StartXpra are the xpra programs that may start sessions, one per
	// generation (--proxy-start-xpra); nil: "xpra" on PATH.
	StartXpra *XpraPrograms

	// LoginPacketSize bounds each packet before login (a real hello is
	// under 100 KiB); 0: DefaultLoginPacketSize. Raw chunks are refused
	// before login.
	LoginPacketSize int
	// ConnectBuffer bounds the bytes a logged-in client may send while
	// its backend is being connected; 0: DefaultConnectBuffer.
	ConnectBuffer int
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

// nobodyUID is Debian's nobody, never given sessions of its own.
const nobodyUID = 65534

// Defaults of the pre-login bounds.
const (
	DefaultLoginPacketSize = 256 << 10
	DefaultConnectBuffer   = 1 << 20
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

// Candidate is a display and its address; a pool gives several, tried in
// order until one connects.
type Candidate struct {
	Display string       `json:"display"`
	Target  authn.Target `json:"target"`
}
