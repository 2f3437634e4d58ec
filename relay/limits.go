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
// The zero value of each field is its documented default.
type Limits struct {
	LoginTimeout     time.Duration `json:"login_timeout"`     // hello and authentication (xpra: 31 s)
	ChallengeTimeout time.Duration `json:"challenge_timeout"` // after a challenge (xpra: 120 s)
	ConnectTimeout   time.Duration `json:"connect_timeout"`   // backend connect and handshake (xpra: 20 s)
	IdleTimeout      time.Duration `json:"idle_timeout"`      // no traffic either way while relaying; 0: never
	MaxPacketSize    int           `json:"max_packet_size"`   // per frame, handshake and inspected packets
	MaxSessionBuffer int           `json:"max_session_buffer"`
	// PingInterval is how often the proxy pings both peers itself (xpra's
	// proxy: 5 s); 0: never.
	PingInterval time.Duration `json:"ping_interval"`
	// LoginPacketSize bounds each packet before login (a real hello is
	// under 100 KiB); 0: DefaultLoginPacketSize. Raw chunks are refused
	// before login.
	LoginPacketSize int `json:"login_packet_size"`
	// ConnectBuffer bounds the bytes a logged-in client may send while
	// its backend is being connected; 0: DefaultConnectBuffer.
	ConnectBuffer int `json:"connect_buffer"`
	// MaxTargetConnects bounds the dials in progress to one target
	// (ConnectLimiter); 0: no bound.
	MaxTargetConnects int `json:"max_target_connects"`
	// StartSessions lets clients start new sessions through the proxy
	// (xpra's --proxy-start-sessions), at most MaxStartedSessions live
	// sessions per user.
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
	// generation (--proxy-start-xpra); empty: "xpra" on PATH.
	StartXpra []string `json:"start_xpra"`
	// NoBridge turns bridging between xpra generations off
	// (docs/bridge.md): such a client is told why it cannot use the
	// server instead.
	NoBridge bool `json:"no_bridge"`
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
