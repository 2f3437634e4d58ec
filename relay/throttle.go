package relay

import (
	"log/slog"
	"sync"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/logsafe"
)

// Throttle slows down password guessing. Each failed login counts against
// its source address and its username; past a burst, further attempts
// from that source are refused for a lockout that doubles with every
// failure (up to MaxLockout), and a username under attack refuses
// attempts from sources that have already failed for it — a correct login
// from an address with no failures stays fast however hard the username
// is attacked. Safe for use from any goroutine; its memory is bounded by
// MaxEntries.
type Throttle struct {
	// Burst is how many failures a source (SourceBurst) or a username
	// (UserBurst) may have within Window before lockouts begin.
	SourceBurst, UserBurst int
	Window                 time.Duration
	// BaseLockout doubles with every failure past the burst, up to
	// MaxLockout.
	BaseLockout, MaxLockout time.Duration
	// MaxEntries bounds the sources and usernames remembered; the oldest
	// are forgotten first.
	MaxEntries int
	Log        *slog.Logger

	mu      sync.Mutex
	sources map[string]*failures
	users   map[string]*userFailures
	now     func() time.Time
}

type failures struct {
	n      int
	last   time.Time
	until  time.Time // locked out until
	logged bool      // the burst's lockout was logged
}

type userFailures struct {
	failures
	from map[string]struct{} // sources that failed for this user in the window
}

// NewThrottle returns a throttle with the defaults: 5 failures per source
// and 20 per username in 5 minutes, then lockouts from 1 s doubling to
// 5 minutes; 100,000 entries.
func NewThrottle(log *slog.Logger) *Throttle {
	return &Throttle{SourceBurst: 5, UserBurst: 20, Window: 5 * time.Minute, BaseLockout: time.Second,
		MaxLockout: 5 * time.Minute, MaxEntries: 100_000, Log: log}
}

func (t *Throttle) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
}

// Allow reports whether a login attempt of user from source may be
// checked now; when not, wait is how long until it may.
func (t *Throttle) Allow(source, user string) (ok bool, wait time.Duration) {
	if t == nil {
		return true, 0
	}
	now := t.clock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.sources[source]; f != nil && now.Before(f.until) {
		return false, f.until.Sub(now)
	}
	if u := t.users[user]; u != nil && now.Before(u.until) {
		if _, failed := u.from[source]; failed {
			return false, u.until.Sub(now)
		}
	}
	return true, 0
}

// Failed records a failed login.
func (t *Throttle) Failed(source, user string) {
	if t == nil {
		return
	}
	now := t.clock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sources == nil {
		t.sources, t.users = map[string]*failures{}, map[string]*userFailures{}
	}
	t.prune(now)
	f := t.sources[source]
	if f == nil {
		f = &failures{}
		t.sources[source] = f
	}
	if t.count(f, now, t.SourceBurst) && !f.logged && t.Log != nil {
		f.logged = true
		t.Log.Warn("login throttled: too many failed logins from this address", "source", source,
			"failures", f.n, "lockout", f.until.Sub(now).String())
	}
	u := t.users[user]
	if u == nil {
		u = &userFailures{from: map[string]struct{}{}}
		t.users[user] = u
	}
	if len(u.from) < 1024 {
		u.from[source] = struct{}{}
	}
	if t.count(&u.failures, now, t.UserBurst) && !u.logged && t.Log != nil {
		u.logged = true
		t.Log.Warn("login throttled: too many failed logins for this username", "user", logsafe.String(user),
			"failures", u.n, "sources", len(u.from))
	}
}

// Succeeded forgets a source's failures after a correct login.
func (t *Throttle) Succeeded(source string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	delete(t.sources, source)
	t.mu.Unlock()
}

// count adds a failure; past burst it sets a doubling lockout and
// reports true.
func (t *Throttle) count(f *failures, now time.Time, burst int) bool {
	if now.Sub(f.last) > t.Window {
		f.n, f.logged = 0, false
	}
	f.n++
	f.last = now
	if f.n <= burst {
		return false
	}
	d := t.BaseLockout << min(f.n-burst-1, 30)
	if d <= 0 || d > t.MaxLockout {
		d = t.MaxLockout
	}
	f.until = now.Add(d)
	return true
}

// prune forgets entries older than the window, and the oldest ones when
// over MaxEntries.
func (t *Throttle) prune(now time.Time) {
	if len(t.sources)+len(t.users) < t.MaxEntries {
		return
	}
	for k, f := range t.sources {
		if now.Sub(f.last) > t.Window && now.After(f.until) {
			delete(t.sources, k)
		}
	}
	for k, u := range t.users {
		if now.Sub(u.last) > t.Window && now.After(u.until) {
			delete(t.users, k)
		}
	}
	// Still full: drop entries at random (map order) down to 3/4.
	for k := range t.sources {
		if len(t.sources)+len(t.users) < t.MaxEntries*3/4 {
			break
		}
		delete(t.sources, k)
	}
	for k := range t.users {
		if len(t.sources)+len(t.users) < t.MaxEntries*3/4 {
			break
		}
		delete(t.users, k)
	}
}

// ConnectLimiter bounds the dials in progress to each target, so that a
// target that never answers holds at most PerTarget of the proxy's dial
// workers. Safe for use from any goroutine.
type ConnectLimiter struct {
	PerTarget int

	mu   sync.Mutex
	busy map[string]int
}

// Acquire takes a slot for target; false when PerTarget dials to it are
// already in progress.
func (l *ConnectLimiter) Acquire(target string) bool {
	if l == nil || l.PerTarget <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy == nil {
		l.busy = map[string]int{}
	}
	if l.busy[target] >= l.PerTarget {
		return false
	}
	l.busy[target]++
	return true
}

// Release gives back a slot taken by Acquire.
func (l *ConnectLimiter) Release(target string) {
	if l == nil || l.PerTarget <= 0 {
		return
	}
	l.mu.Lock()
	if l.busy[target] <= 1 {
		delete(l.busy, target)
	} else {
		l.busy[target]--
	}
	l.mu.Unlock()
}
