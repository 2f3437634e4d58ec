package privsep

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// Supervisor is the main process's side: it starts a worker per account
// (or per connection), hands clients to them and routes control requests
// by connection id. Safe for concurrent use.
type Supervisor struct {
	// Exe is the xpraproxy binary; workers run `Exe worker ...`.
	Exe string
	// PerConnection starts one worker per connection (xpra's isolation)
	// instead of one per account.
	PerConnection bool
	// IdleTimeout is how long a worker without sessions stays (0: it is
	// told to exit as soon as its last session ends).
	IdleTimeout time.Duration
	Config      WorkerConfig
	// Output receives the workers' logs (the proxy's own log), in
	// LogFormat (--log-format: "" or text, json); their access records
	// come over the control socket and are lines of Log (privsep/access.go).
	Output    io.Writer
	LogFormat string
	Log       *slog.Logger
	// OnEnded, when set, is told that a handed-off connection ended (or
	// was lost with its worker): the target pools release it.
	OnEnded func(id uint64)
	// Pools are the main process's target pools: the workers' reports of
	// the members their sessions used or found dead reach them here.
	Pools route.Pools
	// NoRecords: nothing reads the sessions' records (no session
	// registry), so the main process keeps none: a few hundred bytes per
	// handed-off session that a root proxy without a fleet need not hold
	// (BENCHMARKS.md, density in both modes). Records then lists nothing.
	NoRecords bool

	// forward takes the live sessions workers hand over at an upgrade
	// (rootupgrade.go); set by HandOver, under mu.
	forward func(authn.Account, *loop.HandedSession) error

	mu       sync.Mutex
	workers  map[string]*worker0 // by account key
	starting map[string]chan struct{}
	routes   map[uint64]routed // connection id → its worker
	records  map[uint64]relay.Record
	// stale are workers started with a configuration a reload replaced:
	// they keep their sessions, take no new ones and exit after the last.
	stale map[*worker0]bool
	// gone are the traffic and handshake counters of workers that
	// exited, as they last reported them: counters only grow.
	gone   loop.Counters
	closed bool
	serial int
	wg     sync.WaitGroup

	Started, Crashed atomic.Int64
}

// routed is where a handed-off connection went: its worker, and the pool
// it was handed with (a worker's reports about another are dropped).
type routed struct {
	w    *worker0
	pool string
	// lost is the access record written if the worker dies with the
	// session (its own record never comes then).
	lost lostSession
}

// worker0 is the main process's handle on one worker process.
type worker0 struct {
	key      string
	acct     authn.Account
	cmd      *exec.Cmd
	ch       *channel
	pid      int
	socket   string
	sessions int       // routed connections (under Supervisor.mu)
	idleAt   time.Time // when sessions last fell to 0
	retiring bool
	last     *loop.Counters // as last reported (under Supervisor.mu)
	folded   bool           // last is in Supervisor.gone: it exited

	seq     atomic.Uint64
	pmu     sync.Mutex
	pending map[uint64]chan *message
	dead    chan struct{}
}

func (s *Supervisor) init() {
	if s.workers == nil {
		s.workers = map[string]*worker0{}
		s.starting = map[string]chan struct{}{}
		s.routes = map[uint64]routed{}
		s.records = map[uint64]relay.Record{}
		s.stale = map[*worker0]bool{}
	}
}

// HandOff passes one authenticated client to its account's worker,
// starting the worker if needed. It implements relay.HandOffFunc.
func (s *Supervisor) HandOff(h *relay.Handoff, acct authn.Account, client *os.File) error {
	defer client.Close()
	if acct.Root() {
		return &disconnect.Error{Stage: disconnect.HandOff, Reason: "authentication error", Message: "cannot run proxy instances as root",
			Err: errors.New("root target")}
	}
	w, err := s.workerFor(acct)
	if err != nil {
		return &disconnect.Error{Stage: disconnect.HandOff, Reason: "server error", Message: "cannot start the proxy instance", Err: err}
	}
	// Route and record first: the worker may report where the session
	// went, or its end, at once.
	rec := relay.Record{ID: h.ID, User: h.User, Pool: h.Pool, Client: h.Peer, Started: h.Started, Active: h.Started}
	if len(h.Candidates) > 0 {
		// The pool's pick, until the worker reports the member it used.
		rec.Display = route.RedactDisplay(h.Candidates[0].Display)
	}
	s.mu.Lock()
	s.routes[h.ID] = routed{w: w, pool: h.Pool, lost: lostSession{user: h.User, peer: h.Peer, transport: h.Transport, link: h.Link, started: h.Started}}
	if !s.NoRecords {
		s.records[h.ID] = rec
	}
	s.mu.Unlock()
	if err := w.ch.send(&message{Op: "session", Handoff: h}, client); err != nil {
		s.unroute(h.ID)
		return &disconnect.Error{Stage: disconnect.HandOff, Reason: "server error", Message: "cannot reach the proxy instance", Err: err}
	}
	s.Log.Info("connection handed to worker", "session", h.ID, "user", logsafe.String(h.User), "uid", acct.UID, "worker", w.pid)
	return nil
}

func key(a authn.Account) string {
	g := slices.Clone(a.Groups)
	slices.Sort(g)
	return fmt.Sprint(a.UID, ":", a.GID, ":", g)
}

// workerFor returns a live worker for acct, reserving a session on it so
// that it is not retired in the meantime. Concurrent first connections of
// one account wait for the one worker being started.
func (s *Supervisor) workerFor(acct authn.Account) (*worker0, error) {
	s.mu.Lock()
	s.init()
	k := key(acct)
	if s.PerConnection {
		s.serial++
		k += "#" + strconv.Itoa(s.serial)
	}
	for {
		if s.closed {
			s.mu.Unlock()
			return nil, errors.New("privsep: shutting down")
		}
		if w := s.workers[k]; w != nil && !w.retiring {
			w.sessions++
			s.mu.Unlock()
			return w, nil
		}
		wait := s.starting[k]
		if wait == nil {
			break
		}
		s.mu.Unlock()
		<-wait
		s.mu.Lock()
	}
	done := make(chan struct{})
	s.starting[k] = done
	s.mu.Unlock()
	w, err := s.start(k, acct)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.starting, k)
	close(done)
	if err != nil {
		return nil, err
	}
	if s.closed {
		w.ch.close()
		return nil, errors.New("privsep: shutting down")
	}
	s.workers[k] = w
	w.sessions++
	return w, nil
}

// start runs a worker and waits for it to be ready.
func (s *Supervisor) start(k string, acct authn.Account) (*worker0, error) {
	ch, child, err := socketpair()
	if err != nil {
		return nil, err
	}
	groups := make([]string, len(acct.Groups))
	for i, g := range acct.Groups {
		groups[i] = strconv.Itoa(g)
	}
	cmd := exec.Command(s.Exe, "worker", "--uid="+strconv.Itoa(acct.UID), "--gid="+strconv.Itoa(acct.GID),
		"--groups="+strings.Join(groups, ","), "--log-format="+cmp.Or(s.LogFormat, "text"))
	cmd.ExtraFiles = []*os.File{child} // fd 3: ControlFD
	cmd.Stdout, cmd.Stderr = s.Output, s.Output
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	if u, err := user.LookupId(strconv.Itoa(acct.UID)); err == nil {
		env = append(env, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
	}
	if v, ok := os.LookupEnv("GOGC"); ok {
		env = append(env, "GOGC="+v)
	}
	cmd.Env = env
	cmd.Dir = "/"
	// The worker drops privileges itself (and checks it cannot get them
	// back); Pdeathsig ends it if the main process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		child.Close()
		ch.close()
		return nil, fmt.Errorf("privsep: start worker: %w", err)
	}
	child.Close()
	w := &worker0{key: k, acct: acct, cmd: cmd, ch: ch, pid: cmd.Process.Pid,
		pending: map[uint64]chan *message{}, dead: make(chan struct{})}
	s.mu.Lock()
	cfg := s.Config
	s.mu.Unlock()
	if err := ch.send(&message{Op: "config", Config: &cfg}, nil); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		ch.close()
		return nil, err
	}
	ready := make(chan *message, 1)
	go func() {
		m, _, err := ch.recv()
		if err != nil || m.Op != "ready" {
			ready <- nil
			return
		}
		ready <- m
	}()
	var m *message
	select {
	case m = <-ready:
	case <-time.After(10 * time.Second):
	}
	if m == nil {
		ch.close()
		cmd.Process.Kill()
		err := cmd.Wait()
		return nil, fmt.Errorf("privsep: worker for uid %d did not start: %v", acct.UID, err)
	}
	w.socket = m.Socket
	s.Started.Add(1)
	s.Log.Info("worker started", "pid", w.pid, "uid", acct.UID, "gid", acct.GID, "socket", w.socket)
	s.wg.Add(1)
	go s.watch(w)
	return w, nil
}

// watch reads a worker's messages until it goes away, then reaps it.
func (s *Supervisor) watch(w *worker0) {
	defer s.wg.Done()
	var live *pendingLive // a live session whose server socket comes next
	for {
		m, f, err := w.ch.recv()
		if f != nil && (err != nil || (m.Op != "live" && m.Op != "live-server")) {
			f.Close()
		}
		if err != nil {
			live.close()
			break
		}
		switch m.Op {
		case "live":
			live.close()
			live = &pendingLive{m: m, client: f}
		case "live-server":
			s.forwardLive(w, live, f)
			live = nil
		case "reply":
			w.pmu.Lock()
			c := w.pending[m.Seq]
			delete(w.pending, m.Seq)
			w.pmu.Unlock()
			if c != nil {
				c <- m
			}
		case "ended":
			if m.Counters != nil {
				s.mu.Lock()
				w.last = m.Counters
				s.mu.Unlock()
			}
			s.unroute(m.ID)
		case "use", "failed":
			s.tracked(w, m)
		case "access":
			if m.Access != nil {
				s.access(m.Access.Bounded())
			}
		}
	}
	w.ch.close()
	close(w.dead)
	err := w.cmd.Wait()
	s.mu.Lock()
	w.folded = true
	if w.last != nil {
		s.gone.C2S, s.gone.S2C = s.gone.C2S.Plus(w.last.C2S), s.gone.S2C.Plus(w.last.S2C)
		for k, v := range w.last.Handshakes {
			if s.gone.Handshakes == nil {
				s.gone.Handshakes = map[string]int64{}
			}
			s.gone.Handshakes[k] += v
		}
	}
	lost := 0
	var lostRecs []relay.AccessRecord
	for id, r := range s.routes {
		if r.w == w {
			delete(s.routes, id)
			delete(s.records, id)
			lost++
			if s.OnEnded != nil {
				s.OnEnded(id)
			}
			lostRecs = append(lostRecs, r.lost.record(id))
		}
	}
	for k, rw := range s.workers {
		if rw == w {
			delete(s.workers, k)
		}
	}
	delete(s.stale, w)
	closing := s.closed || w.retiring
	s.mu.Unlock()
	for _, r := range lostRecs {
		s.access(r)
	}
	if w.socket != "" {
		os.Remove(w.socket) // a killed worker leaves it behind
	}
	switch {
	case closing && err == nil:
		s.Log.Info("worker exited", "pid", w.pid, "uid", w.acct.UID)
	case closing:
		s.Log.Info("worker stopped", "pid", w.pid, "uid", w.acct.UID, "status", err.Error())
	default:
		s.Crashed.Add(1)
		status := "exited"
		if err != nil {
			status = err.Error()
		}
		s.Log.Error("worker died; its connections are lost", "pid", w.pid, "uid", w.acct.UID,
			"status", status, "sessions", lost)
	}
}

// unroute forgets a finished connection; a worker left without any is
// retired after IdleTimeout.
func (s *Supervisor) unroute(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.routes[id]
	if !ok {
		return
	}
	w := r.w
	delete(s.routes, id)
	delete(s.records, id)
	if s.OnEnded != nil {
		s.OnEnded(id)
	}
	w.sessions--
	if w.sessions > 0 {
		return
	}
	w.idleAt = time.Now()
	if s.IdleTimeout <= 0 || s.PerConnection || s.stale[w] {
		s.retire(w)
	}
}

// retire tells an idle worker to exit (under s.mu).
func (s *Supervisor) retire(w *worker0) {
	if w.retiring {
		return
	}
	w.retiring = true
	go w.ch.send(&message{Op: "exit"}, nil)
}

// Sweep retires workers idle for longer than IdleTimeout; the proxy calls
// it periodically.
func (s *Supervisor) Sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.workers {
		if w.sessions == 0 && !w.retiring && now.Sub(w.idleAt) >= s.IdleTimeout {
			s.Log.Info("retiring idle worker", "pid", w.pid, "uid", w.acct.UID)
			s.retire(w)
		}
	}
}

// Reconfigure gives workers started from now on cfg (a reload): the
// running ones keep their sessions under the configuration they were
// started with, take no new ones, and exit when their last session ends.
func (s *Supervisor) Reconfigure(cfg WorkerConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.Config = cfg
	for k, w := range s.workers {
		delete(s.workers, k)
		if w.retiring {
			continue
		}
		s.stale[w] = true
		if w.sessions == 0 {
			s.retire(w)
		}
	}
}

// Routed is the number of connections handed to workers that have not
// ended.
func (s *Supervisor) Routed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.routes)
}

// SetPools replaces Pools (a reload) for the reports read from now on.
func (s *Supervisor) SetPools(p route.Pools) {
	s.mu.Lock()
	s.Pools = p
	s.mu.Unlock()
}

// request asks a worker something and waits for its reply (2 s at most).
func (w *worker0) request(m *message) (*message, error) {
	return w.requestFor(m, 2*time.Second)
}

func (s *Supervisor) route(id uint64) *worker0 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routes[id].w
}

func (s *Supervisor) live() []*worker0 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*worker0, 0, len(s.workers)+len(s.stale))
	for _, w := range s.workers {
		out = append(out, w)
	}
	for w := range s.stale {
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b *worker0) int { return a.pid - b.pid })
	return out
}

// Close stops every worker: their control sockets close, they end their
// sessions and exit; those still running after timeout are killed.
func (s *Supervisor) Close(timeout time.Duration) { s.CloseWith(timeout, relay.CloseShutdown, "") }

// CloseWith is Close, the workers' sessions ended for r and their
// clients told why ("": the proxy stopped).
func (s *Supervisor) CloseWith(timeout time.Duration, r relay.CloseReason, why string) {
	s.mu.Lock()
	s.init()
	s.closed = true
	ws := make([]*worker0, 0, len(s.workers)+len(s.stale))
	for _, w := range s.workers {
		ws = append(ws, w)
	}
	for w := range s.stale {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.ch.send(&message{Op: "exit", Err: why, Kind: r.String()}, nil)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		for _, w := range ws {
			w.cmd.Process.Kill()
		}
		<-done
	}
}
