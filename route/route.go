// Package route answers "which xpra server does this user get": from an
// authenticated identity and the client's request it gives the ordered
// candidates to dial — the module's explicit targets, the user's local
// sessions, a pool's live members in its policy's order — or says that a
// new session should be started. It does not authenticate (authn) and
// does not dial (relay).
package route

import (
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

// Candidate is a display and its address; a pool gives several, tried in
// order until one connects.
type Candidate struct {
	Display string `json:"display"`
	Target  Target `json:"target"`
}

// Router holds what routing needs of the proxy's configuration.
type Router struct {
	// Pools are the target pools that `pool:NAME` displays name.
	Pools Pools
	// OwnDisplay is the proxy's own display, never a candidate.
	OwnDisplay string
	// Hostname prefixes xpra 3.1's socket names (SocketHostname).
	Hostname string
	// Fleet, when set, is what other proxy instances know (a session
	// registry): their sessions per pool member and users' affinities.
	Fleet Fleet
}

// Fleet is the view of the other instances of a fleet that routing uses.
// Its methods may block briefly (they may ask a database) and must
// answer within a short deadline either way; members are named by their
// redacted display (RedactDisplay).
type Fleet interface {
	// Counts are the sessions other live instances relay to each
	// member of pool.
	Counts(pool string) map[string]int
	// Affinity is the member user's last session in pool went to, "" if
	// none is known.
	Affinity(user, pool string) string
}

// Request is one authenticated client's routing question.
type Request struct {
	// Session identifies the connection to the pools (their counts).
	Session uint64
	// User is the authenticated username (pool affinity).
	User string
	// Displays and Explicit are the identity's (authn.Identity): with
	// Explicit false the user's live local sessions are added.
	Displays []string
	Explicit bool
	// Requested is the display the client named ("" for none).
	Requested string
	// Dirs and UID say where the user's local sessions are and whose
	// sockets count (DirsFor).
	Dirs []string
	UID  int
	// StartNew: the client asked for a new session (start-new-session).
	// StartIfNone: a user with no session gets a new one (xpra's proxy
	// with --proxy-start-sessions).
	StartNew, StartIfNone bool
}

// Plan is the answer: candidates to dial in order, or Start.
type Plan struct {
	Candidates []Candidate
	// Pool is the pool the candidates come from (nil for others): the
	// dialer tells it which member failed and which one it used.
	Pool *Pool
	// Start: start a new session for the user instead of dialing.
	Start bool
}

// localTimeout bounds the liveness check of each local socket.
const localTimeout = 2 * time.Second

// Route runs off the event loop (it reads socket directories and checks
// sockets): the display by xpra's proxy rules, then its address.
func (r *Router) Route(req Request) (Plan, error) {
	if req.StartNew {
		return Plan{Start: true}, nil
	}
	candidates := req.Displays
	if !req.Explicit {
		for _, ls := range LocalSessions(req.Dirs, r.Hostname, req.UID, localTimeout) {
			candidates = append(candidates, ls.Display)
		}
	}
	display, err := ChooseDisplay(candidates, req.Requested, r.OwnDisplay)
	if err != nil {
		if se, ok := disconnect.Is(err, disconnect.Session); ok && se.Message == noDisplays && req.StartIfNone {
			return Plan{Start: true}, nil
		}
		return Plan{}, err
	}
	if name, ok := strings.CutPrefix(display, PoolPrefix); ok {
		pool := r.Pools[name]
		if pool == nil {
			return Plan{}, notFound("no target pool %s", name)
		}
		var hints Hints
		if r.Fleet != nil {
			hints.Remote = r.Fleet.Counts(name)
			hints.Prefer = r.Fleet.Affinity(req.User, name)
		}
		cands, err := pool.Pick(req.Session, hints)
		if err != nil {
			return Plan{}, err
		}
		return Plan{Candidates: cands, Pool: pool}, nil
	}
	t, err := ParseTarget(display)
	if err != nil {
		return Plan{}, notFound("invalid display string")
	}
	if t.Network == "unix" && t.Address == "" {
		if t.Address, err = FindSocket(req.Dirs, r.Hostname, t.Display); err != nil {
			return Plan{}, err
		}
	}
	return Plan{Candidates: []Candidate{{Display: display, Target: t}}}, nil
}

// DirsFor expands socket directory templates ($UID, ~, ...) for the
// account uid; the templates themselves when it has no passwd entry.
func DirsFor(templates []string, uid int) []string {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return templates
	}
	dirs := make([]string, len(templates))
	for i, d := range templates {
		dirs[i] = ExpandDir(d, u)
	}
	return dirs
}
