package route

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

// Target pools (the idea of Prosody's mod_client_proxy): one name in front
// of several xpra servers. A user whose displays entry is `pool:NAME` gets
// one of them, ordered per connection by the pool's Selector among the
// live ones; a connect failure marks the target dead and moves on to the
// next. Liveness comes from probes (a TCP connect every probe interval,
// the Prosody module's presence) and from failed connects.

// PoolPrefix marks a displays entry that names a pool.
const PoolPrefix = "pool:"

// Pool is a named set of targets.
type Pool struct {
	Name     string
	Policy   string
	selector Selector
	targets  []poolTarget

	mu       sync.Mutex
	assigned map[uint64]int // session id → target index
}

type poolTarget struct {
	display  string
	redacted string // display without secrets: how a fleet names the member
	target   Target
	live     bool
	sessions int
	checked  time.Time
}

// ParsePool reads NAME:POLICY:TARGET,TARGET,... (--pool).
func ParsePool(s string) (*Pool, error) {
	name, rest, ok := strings.Cut(s, ":")
	policy, list, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || name == "" {
		return nil, errors.New("route: --pool: want NAME:POLICY:TARGET[,TARGET...]")
	}
	sel, err := NewSelector(policy)
	if err != nil {
		return nil, fmt.Errorf("route: pool %s: %w", name, err)
	}
	p := &Pool{Name: name, Policy: policy, selector: sel, assigned: map[uint64]int{}}
	for _, d := range strings.Split(list, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		t, err := ParseTarget(d)
		if err != nil {
			return nil, fmt.Errorf("route: pool %s: %w", name, err)
		}
		if t.Network == "unix" && t.Address == "" {
			return nil, fmt.Errorf("route: pool %s: %s: pools take addresses (tcp://, ssl://, ws://, socket:/path)", name, RedactDisplay(d))
		}
		p.targets = append(p.targets, poolTarget{display: d, redacted: RedactDisplay(d), target: t, live: true})
	}
	if len(p.targets) == 0 {
		return nil, fmt.Errorf("route: pool %s has no target", name)
	}
	return p, nil
}

// Displays are the pool's members as configured (for logs; they may hold
// credentials: redact before printing).
func (p *Pool) Displays() []string {
	out := make([]string, len(p.targets))
	for i, t := range p.targets {
		out[i] = t.display
	}
	return out
}

// Hints are what a fleet adds to one pick: the sessions other instances
// relay to each member (by redacted display), and the member the user's
// last session went to, tried first while it is live.
type Hints struct {
	Remote map[string]int
	Prefer string
}

// Pick orders the pool's live targets for session id by its Selector:
// the first is tried first, the others on failure. The session counts for
// the first until Release (or Failed or Use moves it).
func (p *Pool) Pick(id uint64, h Hints) ([]Candidate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	members := make([]Member, 0, len(p.targets))
	preferred := -1
	for i, t := range p.targets {
		if t.live {
			if h.Prefer != "" && t.redacted == h.Prefer {
				preferred = len(members)
			}
			members = append(members, Member{Display: t.display, Sessions: t.sessions + h.Remote[t.redacted], Index: i})
		}
	}
	if len(members) == 0 {
		return nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error", Message: "no live server in pool " + p.Name}
	}
	if preferred >= 0 {
		// Affinity: back to the member that has the user's session.
		m := members[preferred]
		members = append(members[:preferred], members[preferred+1:]...)
		p.selector.Order(members)
		members = append([]Member{m}, members...)
	} else {
		p.selector.Order(members)
	}
	out := make([]Candidate, len(members))
	for i, m := range members {
		out[i] = Candidate{Display: m.Display, Target: p.targets[m.Index].target}
	}
	p.assign(id, members[0].Index)
	return out, nil
}

func (p *Pool) assign(id uint64, i int) {
	if old, ok := p.assigned[id]; ok {
		p.targets[old].sessions--
	}
	p.assigned[id] = i
	p.targets[i].sessions++
}

func (p *Pool) index(display string) int {
	for i, t := range p.targets {
		if t.display == display {
			return i
		}
	}
	return -1
}

// Failed marks a target dead after a failed connect; session id moves on
// to next (its next candidate), if any.
func (p *Pool) Failed(id uint64, display, next string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := p.index(display); i >= 0 {
		p.targets[i].live = false
		p.targets[i].checked = time.Now()
	}
	if j := p.index(next); j >= 0 {
		p.assign(id, j)
	}
}

// Use counts session id for the member it reached (display), which is
// not the Selector's first choice when the client's xpra generation made
// the proxy skip members.
func (p *Pool) Use(id uint64, display string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := p.index(display); i >= 0 {
		p.assign(id, i)
	}
}

// Release forgets session id (it ended).
func (p *Pool) Release(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i, ok := p.assigned[id]; ok {
		p.targets[i].sessions--
		delete(p.assigned, id)
	}
}

// Probe checks every target with a connect (timeout each) and updates
// liveness: the pool's presence.
func (p *Pool) Probe(timeout time.Duration) {
	p.mu.Lock()
	targets := slices.Clone(p.targets)
	p.mu.Unlock()
	live := make([]bool, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := net.DialTimeout(t.target.Network, t.target.Address, timeout); err == nil {
				c.Close()
				live[i] = true
			}
		}()
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.targets {
		p.targets[i].live, p.targets[i].checked = live[i], time.Now()
	}
}

// Status describes the pool for info: each target's liveness and sessions.
func (p *Pool) Status() map[string][2]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][2]int{}
	for _, t := range p.targets {
		l := 0
		if t.live {
			l = 1
		}
		out[t.display] = [2]int{l, t.sessions}
	}
	return out
}

// Pools are the proxy's pools by name.
type Pools map[string]*Pool

// ProbeEvery probes every pool until stop is closed.
func (ps Pools) ProbeEvery(interval time.Duration, stop <-chan struct{}) {
	if len(ps) == 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, p := range ps {
			p.Probe(min(interval/2, 2*time.Second))
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// Release forgets a session in every pool (it ended).
func (ps Pools) Release(id uint64) {
	for _, p := range ps {
		p.Release(id)
	}
}
