package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

// Target pools (the idea of Prosody's mod_client_proxy): one name in front
// of several xpra servers. A user whose displays entry is `pool:NAME` gets
// one of them, chosen per connection by the pool's policy among the live
// ones; a connect failure marks the target dead and moves on to the next.
// Liveness comes from probes (a TCP connect every ProbeInterval, the
// Prosody module's presence) and from failed connects.

// Pool policies.
const (
	PolicyRandom        = "random"
	PolicyLeastSessions = "least-sessions"
	PolicyFirstLive     = "first-live"
)

// PoolPrefix marks a displays entry that names a pool.
const PoolPrefix = "pool:"

// Pool is a named set of targets.
type Pool struct {
	Name    string
	Policy  string
	targets []poolTarget

	mu       sync.Mutex
	assigned map[uint64]int // session id → target index, for least-sessions
}

type poolTarget struct {
	display  string
	target   authn.Target
	live     bool
	sessions int
	checked  time.Time
}

// ParsePool reads NAME:POLICY:TARGET,TARGET,... (--pool).
func ParsePool(s string) (*Pool, error) {
	name, rest, ok := strings.Cut(s, ":")
	policy, list, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || name == "" {
		return nil, errors.New("relay: --pool: want NAME:POLICY:TARGET[,TARGET...]")
	}
	switch policy {
	case PolicyRandom, PolicyLeastSessions, PolicyFirstLive:
	default:
		return nil, fmt.Errorf("relay: pool %s: unknown policy %q (random, least-sessions, first-live)", name, policy)
	}
	p := &Pool{Name: name, Policy: policy, assigned: map[uint64]int{}}
	for _, d := range strings.Split(list, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		t, err := authn.ParseTarget(d)
		if err != nil {
			return nil, fmt.Errorf("relay: pool %s: %w", name, err)
		}
		if t.Network == "unix" && t.Address == "" {
			return nil, fmt.Errorf("relay: pool %s: %s: pools take addresses (tcp://, ssl://, ws://, socket:/path)", name, authn.RedactDisplay(d))
		}
		p.targets = append(p.targets, poolTarget{display: d, target: t, live: true})
	}
	if len(p.targets) == 0 {
		return nil, fmt.Errorf("relay: pool %s has no target", name)
	}
	return p, nil
}

// Pick orders the pool's live targets for session id by the policy: the
// first is tried first, the others on failure. The session counts for the
// first until Release (or Failed moves it).
func (p *Pool) Pick(id uint64) ([]string, []authn.Target, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var idx []int
	for i, t := range p.targets {
		if t.live {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error", Message: "no live server in pool " + p.Name}
	}
	switch p.Policy {
	case PolicyRandom:
		rand.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
	case PolicyLeastSessions:
		slices.SortStableFunc(idx, func(a, b int) int { return p.targets[a].sessions - p.targets[b].sessions })
	}
	displays := make([]string, len(idx))
	targets := make([]authn.Target, len(idx))
	for i, j := range idx {
		displays[i], targets[i] = p.targets[j].display, p.targets[j].target
	}
	p.assign(id, idx[0])
	return displays, targets, nil
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
// not the policy's first choice when the client's xpra generation made
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
