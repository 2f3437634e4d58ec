package loop

// Admission when the pre-login cap is full (docs/frontdoor.md, "A crowd
// at the door"): a new connection is never refused for the cap while a
// less deserving one holds a place; it takes the place of one pre-login
// connection instead, the victim chosen so that a crowd cannot keep the
// cap to itself:
//
//   - from the address prefix (IPv4 /24, IPv6 /64; "unix" and anything
//     else a group of its own) that holds the most pre-login
//     connections, so that no block holds most of the cap and a fresh
//     prefix always gets in; the newcomer's own group when it is among
//     the largest, so that a group never grows at another's expense once
//     it is the largest;
//   - within that, the least advanced (nothing read < bytes but no hello
//     < a hello read and a challenge or authentication pending), and
//     among those the longest waiting; a connection with nothing read
//     that is younger than admitGrace goes after those with bytes, so a
//     client between its connect and its hello is not the first to go;
//   - never an authenticated one (its session being found, started or
//     dialed): when only those are left, the newcomer is refused.
//
// The choice costs O(log n) under one mutex: each group keeps its
// tickets in a heap per stage by arrival, and groups of each size sit in
// a heap per stage by their oldest ticket of that stage, so the victim is
// at the top of the largest size's heaps. Loops move a ticket between
// stages (progress), at most once per stage.

import (
	"container/heap"
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// stage is how far a pre-login connection has come; the accept goroutine
// evicts the least advanced first.
type stage uint32

const (
	stageNew    stage = iota // accepted, nothing read yet
	stageBytes               // bytes but no hello: part of one, a TLS handshake, an HTTP request, a WebSocket upgrade
	stageHello               // a hello read: a challenge pending, authentication running
	stageAuthed              // authenticated, its session being found, started or dialed: never evicted
	stageDone                // logged in, evicted or closed: out of the queues

	evictable = stageAuthed // stages below it may be evicted
)

// admitGrace: a connection with nothing read yet that is younger than
// this makes way only after those that sent bytes without a hello (a
// client between its connect and its hello is not a squatter yet).
const admitGrace = 250 * time.Millisecond

// evictReason and evictDetail are what an evicted connection is told: the
// words of the refusal that eviction replaces, and what happened.
const (
	evictReason = "too many connections waiting to log in"
	evictDetail = "made way for a newer connection, try again later"
)

// prefixKey is an address's group for the fairness of evictions: its
// IPv4 /24 or IPv6 /64, or for anything that is no IP address ("unix",
// "unknown") the string itself.
type prefixKey struct {
	p     netip.Prefix
	other string
}

// prefixOf groups a source address (relay.SourceOf's: an IP without its
// port, or "unix").
func prefixOf(src string) prefixKey {
	a, err := netip.ParseAddr(src)
	if err != nil {
		return prefixKey{other: src}
	}
	a = a.WithZone("").Unmap()
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return prefixKey{other: src}
	}
	return prefixKey{p: p}
}

func (k prefixKey) String() string {
	if k.p.IsValid() {
		return k.p.String()
	}
	return k.other
}

// waiting is a pre-login ticket's place in the admission queues; every
// field is under admission.mu.
type waiting struct {
	t     *ticket
	g     *group
	stage stage
	seq   uint64 // arrival order
	at    time.Time
	idx   int       // in g.q[stage]
	cn    *conn     // bound on its loop (OnOpen, a stream's start); nil before
	c     gnet.Conn // its socket; nil for a stream
}

// group is one prefix's pre-login tickets.
type group struct {
	key prefixKey
	n   int                   // its tickets, authenticated ones included
	q   [evictable]ticketHeap // the evictable ones by stage, oldest first
	at  [evictable]int        // its index in its size's heap of each stage; -1: not there
}

// ticketHeap orders a group's tickets of one stage by arrival.
type ticketHeap []*waiting

func (h ticketHeap) Len() int           { return len(h) }
func (h ticketHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h ticketHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *ticketHeap) Push(x any)        { w := x.(*waiting); w.idx = len(*h); *h = append(*h, w) }
func (h *ticketHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.idx = -1
	return w
}

// groupHeap orders the groups of one size by their oldest ticket of one
// stage (st).
type groupHeap struct {
	st stage
	gs []*group
}

func (h *groupHeap) Len() int { return len(h.gs) }
func (h *groupHeap) Less(i, j int) bool {
	return h.gs[i].q[h.st][0].seq < h.gs[j].q[h.st][0].seq
}
func (h *groupHeap) Swap(i, j int) {
	h.gs[i], h.gs[j] = h.gs[j], h.gs[i]
	h.gs[i].at[h.st], h.gs[j].at[h.st] = i, j
}
func (h *groupHeap) Push(x any) { g := x.(*group); g.at[h.st] = len(h.gs); h.gs = append(h.gs, g) }
func (h *groupHeap) Pop() any {
	g := h.gs[len(h.gs)-1]
	h.gs[len(h.gs)-1] = nil
	h.gs = h.gs[:len(h.gs)-1]
	g.at[h.st] = -1
	return g
}

// size is the groups that hold one number of pre-login tickets.
type size struct {
	groups int                   // all of them
	by     [evictable]*groupHeap // those with a ticket of each stage
}

// admission is the pre-login tickets in their queues. Safe from any
// goroutine (its mutex).
type admission struct {
	mu     sync.Mutex
	seq    uint64
	n      int
	groups map[prefixKey]*group
	sizes  []*size // sizes[c]: groups of c tickets
	top    int     // the largest c with a group
}

func (a *admission) size(c int) *size {
	for len(a.sizes) <= c {
		sz := &size{}
		for st := range sz.by {
			sz.by[st] = &groupHeap{st: stage(st)}
		}
		a.sizes = append(a.sizes, sz)
	}
	return a.sizes[c]
}

// detach takes g out of its size's heaps (before its count or its oldest
// tickets change); attach puts it back.
func (a *admission) detach(g *group) {
	sz := a.size(g.n)
	for st := range g.at {
		if g.at[st] >= 0 {
			heap.Remove(sz.by[st], g.at[st])
		}
	}
	sz.groups--
}

func (a *admission) attach(g *group) {
	sz := a.size(g.n)
	sz.groups++
	for st := range g.q {
		if len(g.q[st]) > 0 {
			heap.Push(sz.by[st], g)
		}
	}
	a.top = max(a.top, g.n)
}

// add queues a new ticket's place (stage new).
func (a *admission) add(t *ticket, now time.Time) {
	key := prefixOf(t.src)
	if a.groups == nil {
		a.groups = map[prefixKey]*group{}
	}
	g := a.groups[key]
	if g == nil {
		g = &group{key: key, at: [evictable]int{-1, -1, -1}}
		a.groups[key] = g
	} else {
		a.detach(g)
	}
	a.seq++
	w := &waiting{t: t, g: g, stage: stageNew, seq: a.seq, at: now}
	heap.Push(&g.q[stageNew], w)
	g.n++
	a.attach(g)
	a.n++
	t.w = w
}

// remove takes a ticket's place out of the queues; idempotent.
func (a *admission) remove(t *ticket) {
	w := t.w
	if w == nil {
		return
	}
	t.w = nil
	t.stage.Store(uint32(stageDone))
	g := w.g
	a.detach(g)
	if w.stage < evictable {
		heap.Remove(&g.q[w.stage], w.idx)
	}
	g.n--
	a.n--
	if g.n == 0 {
		delete(a.groups, g.key)
	} else {
		a.attach(g)
	}
	for a.top > 0 && a.size(a.top).groups == 0 {
		a.top--
	}
}

// progress moves a ticket to a later stage (earlier ones are ignored).
func (a *admission) progress(t *ticket, st stage) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := t.w
	if w == nil || st <= w.stage {
		return
	}
	g := w.g
	a.detach(g)
	if w.stage < evictable {
		heap.Remove(&g.q[w.stage], w.idx)
	}
	w.stage = st
	if st < evictable {
		heap.Push(&g.q[st], w)
	}
	a.attach(g)
	t.stage.Store(uint32(st))
}

// choose picks among the oldest ticket of each stage (nil: none): the
// least advanced, a fresh silent one after those with bytes.
func choose(oldest [evictable]*waiting, now time.Time) *waiting {
	if w := oldest[stageNew]; w != nil && now.Sub(w.at) >= admitGrace {
		return w
	}
	if w := oldest[stageBytes]; w != nil {
		return w
	}
	if w := oldest[stageNew]; w != nil {
		return w
	}
	return oldest[stageHello]
}

// victim is the place a newcomer from own takes when the cap is full;
// nil when every pre-login ticket is authenticated.
func (a *admission) victim(own prefixKey, now time.Time) *waiting {
	og := a.groups[own]
	for c := a.top; c > 0; c-- {
		sz := a.size(c)
		var oldest [evictable]*waiting
		if og != nil && og.n == c {
			for st := range og.q {
				if len(og.q[st]) > 0 {
					oldest[st] = og.q[st][0]
				}
			}
			if w := choose(oldest, now); w != nil {
				return w
			}
		}
		for st, h := range sz.by {
			if len(h.gs) > 0 {
				oldest[st] = h.gs[0].q[st][0]
			}
		}
		if w := choose(oldest, now); w != nil {
			return w
		}
	}
	return nil
}

// eviction is a ticket that made way, and where to tell it.
type eviction struct {
	t  *ticket
	cn *conn
	c  gnet.Conn
}

// enter queues t, first evicting a place when max (> 0) are taken. ok
// is false when the cap is full of authenticated connections.
func (a *admission) enter(t *ticket, max int, now time.Time) (ev *eviction, largest prefixKey, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for max > 0 && a.n >= max {
		w := a.victim(prefixOf(t.src), now)
		if w == nil {
			return nil, largest, false
		}
		vt := w.t
		largest = w.g.key
		a.remove(vt)
		if vt.login.CompareAndSwap(true, false) {
			vt.evicted = true
			ev = &eviction{t: vt, cn: w.cn, c: w.c}
			break
		}
		// It logged in meanwhile: its place was free anyway.
	}
	a.add(t, now)
	return ev, largest, true
}

// bind records where an accepted connection lives once it is on its
// loop (c: nil for a stream); false when it was evicted before that.
func (t *ticket) bind(cn *conn, c gnet.Conn) bool {
	if t == nil {
		return true
	}
	a := &t.srv.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.evicted {
		return false
	}
	if t.w != nil {
		t.w.cn, t.w.c = cn, c
	}
	return true
}

// progress records that the ticket's connection reached st. Called on
// the connection's loop; the fast path is one atomic load.
func (t *ticket) progress(st stage) {
	if t != nil && stage(t.stage.Load()) < st {
		t.srv.adm.progress(t, st)
	}
}

// evicted ends a pre-login connection that made way for a newcomer
// (Server.admit): on its loop, once it is there. An xpra client is told
// why as xpra's plain-text line (or a disconnect packet after its
// hello); an HTTP connection gets a 503 when no response is in flight; a
// TLS handshake is closed.
func (s *Server) evicted(cn *conn, c gnet.Conn) {
	switch cn.role {
	case roleSniff, roleClient:
		if cn.sess != nil && !cn.sess.LoggedIn() {
			cn.sess.Evict(evictReason, evictDetail)
		}
	case roleHTTP:
		var w gnet.Conn = c
		if cn.tls != nil {
			w = cn.tls
		}
		if len(cn.pre.http.body) == 0 && w.OutboundBuffered() == 0 {
			w.Write(httpResponse(503, "Service Unavailable", evictReason+", "+evictDetail+"\n", true))
		}
		c.Close()
	case roleHandshake:
		c.Close()
	case roleSSH:
		cn.pre.ssh.evict()
	}
}

// evict tells the connection that made way (ev from enter), on its
// loop; one not on a loop yet finds out when it gets there (bind).
func (s *Server) evict(ev *eviction) {
	s.evictions.Add(1)
	s.logins.Add(-1)
	s.sources.release(ev.t.src)
	if ev.cn == nil {
		return
	}
	cn, c := ev.cn, ev.c
	_ = cn.ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		s.evicted(cn, c)
		return nil
	}))
}
