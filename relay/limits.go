package relay

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
)

// Limits are the values an operator sets (xpraproxy's options) that
// sessions obey. It is the only thing the CLI fills for sessions and the
// only thing a root proxy sends its workers (as JSON): one value, one
// road, so a worker's sessions and an in-process proxy's see the same.
//
// DefaultLimits are the options' defaults. A zero field means what its
// comment says: "0: never" (or none, no bound) where zero is a setting an
// operator may choose, else the default, which Normalized fills in (a zero
// login timeout would be a deadline of now, a zero packet size would
// refuse every packet). NewConfig normalises; a Config built by hand holds
// its Limits as they are.
type Limits struct {
	// ClientEncryption is xpra's --tcp-encryption for the proxy's
	// listeners: "AES" (any mode), "AES-CBC" or "AES-CTR"; clients must
	// then encrypt (docs/aes.md). "": clients may encrypt when
	// EncryptionKeyFile is set, else those that ask are refused.
	ClientEncryption string `json:"encryption"`
	// EncryptionKeyFile holds the key of encrypted client links (else
	// XPRA_ENCRYPTION_KEY); the path only, never the key.
	EncryptionKeyFile string `json:"encryption_keyfile"`
	// LoginTimeout bounds the hello and authentication (xpra: 31 s);
	// 0: the default.
	LoginTimeout time.Duration `json:"login_timeout"`
	// ChallengeTimeout is the time a challenged client has to answer
	// (xpra: 120 s); 0: the default.
	ChallengeTimeout time.Duration `json:"challenge_timeout"`
	// ConnectTimeout bounds the backend's dial and handshake (xpra:
	// 20 s); 0: the default.
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// IdleTimeout ends a relaying session with no traffic either way for
	// this long; 0: never.
	IdleTimeout time.Duration `json:"idle_timeout"`
	// MaxPacketSize bounds each frame a client sends after login, and the
	// packets the proxy inspects; 0: the default (16 MiB).
	MaxPacketSize int `json:"max_packet_size"`
	// MaxSessionBuffer bounds the bytes one session may hold in user
	// space, both ways; a packet that must be held whole (bridged,
	// inspected) may take it beyond, by half; 0: the default (4 MiB).
	// Flow control keeps a relaying session far under it (flow.go):
	// reaching it means a source could not be paused.
	MaxSessionBuffer int `json:"max_session_buffer"`
	// StallTimeout ends a session whose peer has read nothing of what
	// is queued for it for this long ("connection too slow"); slower
	// readers are slowed, never cut; 0: never.
	StallTimeout time.Duration `json:"stall_timeout"`
	// PingInterval is how often the proxy pings both peers itself (xpra's
	// proxy: 5 s); 0: never.
	PingInterval time.Duration `json:"ping_interval"`
	// LoginPacketSize bounds each packet before login (a real hello is
	// under 100 KiB), at most MaxPacketSize; 0: DefaultLoginPacketSize.
	// Raw chunks are refused before login.
	LoginPacketSize int `json:"login_packet_size"`
	// ConnectBuffer bounds the bytes a logged-in client may send while
	// its backend is being connected; 0: DefaultConnectBuffer.
	ConnectBuffer int `json:"connect_buffer"`
	// MaxTargetConnects bounds the dials in progress to one target
	// (ConnectLimiter); 0: no bound.
	MaxTargetConnects int `json:"max_target_connects"`
	// StartSessions lets clients start new sessions through the proxy
	// (xpra's --proxy-start-sessions), at most MaxStartedSessions live
	// sessions per user (0: no limit).
	StartSessions      bool `json:"start_sessions"`
	MaxStartedSessions int  `json:"max_started_sessions"`
	// StartAsProxyUser lets a proxy that is not root start sessions as
	// its own account (which can read its user database and keys): off
	// unless the operator says so.
	StartAsProxyUser bool `json:"start_as_proxy_user"`
	// StartCommands are the commands a client may ask a new session to
	// run (start, start-child, ... compared whole; "*": any); StartEnv
	// the environment variables it may set. Empty: none.
	StartCommands []string `json:"start_commands"`
	StartEnv      []string `json:"start_env"`
	// StartXpra are the xpra programs that may start sessions, one per
	// generation (--proxy-start-xpra); empty: the default, "xpra" on
	// PATH.
	StartXpra []string `json:"start_xpra"`
	// NoBridge turns bridging between xpra generations off
	// (docs/bridge.md): such a client is told why it cannot use the
	// server instead.
	NoBridge bool `json:"no_bridge"`
}

// Defaults of the Limits whose zero is not a setting of its own.
const (
	DefaultLoginTimeout     = 31 * time.Second
	DefaultChallengeTimeout = 120 * time.Second
	DefaultConnectTimeout   = 20 * time.Second
	DefaultMaxPacketSize    = 16 << 20
	DefaultMaxSessionBuffer = 4 << 20
	DefaultLoginPacketSize  = 256 << 10
	DefaultConnectBuffer    = 1 << 20
	DefaultXpra             = "xpra"
	// DefaultStallTimeout: a client stopped (suspended, its window
	// dragged on some desktops) for less keeps its session.
	DefaultStallTimeout = 60 * time.Second
)

// DefaultLimits are the limits of a proxy started without options: what
// every option of `xpraproxy proxy` defaults to (a test holds the option
// table to it).
func DefaultLimits() Limits {
	l := Limits{}.Normalized()
	// Those whose zero is a setting (never, no bound) but whose default
	// is not zero.
	l.PingInterval = 5 * time.Second
	l.StallTimeout = DefaultStallTimeout
	l.MaxTargetConnects = 32
	l.MaxStartedSessions = 4
	return l
}

// Normalized returns l with every zero field that stands for the default
// set to it; fields whose zero means never or none keep it.
func (l Limits) Normalized() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.LoginTimeout, DefaultLoginTimeout)
	def(&l.ChallengeTimeout, DefaultChallengeTimeout)
	def(&l.ConnectTimeout, DefaultConnectTimeout)
	defInt(&l.MaxPacketSize, DefaultMaxPacketSize)
	defInt(&l.MaxSessionBuffer, DefaultMaxSessionBuffer)
	defInt(&l.LoginPacketSize, min(DefaultLoginPacketSize, l.MaxPacketSize))
	l.LoginPacketSize = min(l.LoginPacketSize, l.MaxPacketSize)
	defInt(&l.ConnectBuffer, DefaultConnectBuffer)
	if len(l.StartXpra) == 0 {
		l.StartXpra = []string{DefaultXpra}
	}
	// Negative values mean nothing either: the same as zero.
	l.IdleTimeout, l.PingInterval, l.StallTimeout = max(l.IdleTimeout, 0), max(l.PingInterval, 0), max(l.StallTimeout, 0)
	l.MaxTargetConnects, l.MaxStartedSessions = max(l.MaxTargetConnects, 0), max(l.MaxStartedSessions, 0)
	return l
}

// Info is the limits as info shows them (`xpra info`: limits.*), by
// their JSON names; durations in nanoseconds, lists comma-separated.
func (l Limits) Info() frame.Dict {
	b, _ := json.Marshal(l)
	var m map[string]any
	json.Unmarshal(b, &m)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	d := frame.NewDict()
	for _, k := range keys {
		switch v := m[k].(type) {
		case float64:
			d.Set(k, int64(v))
		case []any:
			// Lists of names, shown as xpra shows option lists.
			names := make([]string, len(v))
			for i, x := range v {
				names[i], _ = x.(string)
			}
			d.Set(k, strings.Join(names, ","))
		case nil:
			d.Set(k, "")
		default:
			d.Set(k, v)
		}
	}
	return d
}
