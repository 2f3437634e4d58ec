package gpu

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/xpraproxy/xpraproxy/video"
)

// Frame and Result are video's (the values relay/ hands the pool and gets
// back, in a package without cgo so that relay/ need not import gpu/);
// the aliases keep the back ends' code in gpu's own names.
type (
	Frame  = video.Frame
	Result = video.Result
)

// checkFrame validates a frame for the back ends and says whether its
// bytes are in RGB (not BGR) order.
func checkFrame(f *Frame) (rgb bool, err error) {
	switch f.Format {
	case "BGRX", "BGRA":
	case "RGBX", "RGBA":
		rgb = true
	default:
		return false, fmt.Errorf("gpu: unsupported pixel format %q", f.Format)
	}
	if f.Width <= 0 || f.Height <= 0 || f.Stride < 4*f.Width || len(f.Pixels) < f.Stride*(f.Height-1)+4*f.Width {
		return false, fmt.Errorf("gpu: frame %dx%d stride %d with %d bytes", f.Width, f.Height, f.Stride, len(f.Pixels))
	}
	return rgb, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Job is one frame of a batch, with its window's back-end state.
type Job struct {
	Frame *Frame
	State *any // the back end's per-window context (nil until it makes one)
	Out   Result
}

// Backend compresses batches of frames of distinct windows. Encode is
// called from several pool workers at once, each with its own batch.
type Backend interface {
	Name() string
	Encodings() []string
	Encode(jobs []Job)
	// Close frees a window's state.
	Close(state any)
}

// PoolConfig sizes the pool.
type PoolConfig struct {
	Workers    int           // concurrent Encode calls (default 2)
	BatchSize  int           // frames per Encode call (default 16)
	MaxWindows int           // windows with state or frames (default 4096)
	IdleClose  time.Duration // a window's state is freed after this (default 5 s, xpra's VIDEO_TIMEOUT)
}

// ErrPoolFull: the frame was not taken (too many windows); the caller
// passes it through unencoded.
var ErrPoolFull = errors.New("gpu: encoder pool full")

type window struct {
	key      uint64
	state    any
	busy     bool
	pending  *Frame
	done     func(Result)
	replaced []int64
	ready    bool // in the ready queue
	used     time.Time
}

// Pool batches frames to a back end without ever blocking its callers.
type Pool struct {
	cfg     PoolConfig
	backend Backend

	mu      sync.Mutex
	cond    *sync.Cond
	windows map[uint64]*window
	ready   []*window
	closed  bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

// NewPool starts the workers.
func NewPool(b Backend, cfg PoolConfig) *Pool {
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 16
	}
	if cfg.MaxWindows <= 0 {
		cfg.MaxWindows = 4096
	}
	if cfg.IdleClose <= 0 {
		cfg.IdleClose = 5 * time.Second
	}
	p := &Pool{cfg: cfg, backend: b, windows: map[uint64]*window{}, stop: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	for range cfg.Workers {
		p.wg.Add(1)
		go p.work()
	}
	p.wg.Add(1)
	go p.janitor()
	return p
}

// Backend is the pool's back end.
func (p *Pool) Backend() Backend { return p.backend }

// Name is the back end's name (relay.VideoPool: the session's info).
func (p *Pool) Name() string { return p.backend.Name() }

// Encodings are what the back end makes (relay.VideoPool: what servers are
// offered, and which clients get proxy video).
func (p *Pool) Encodings() []string { return p.backend.Encodings() }

// Submit queues f; done runs later on a pool goroutine with the result.
// A newer frame of a window replaces an older one that has not started
// (done is then called once, for the newer frame, listing the older in
// Replaced). It never blocks.
func (p *Pool) Submit(f *Frame, done func(Result)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("gpu: pool closed")
	}
	w := p.windows[f.Window]
	if w == nil {
		if len(p.windows) >= p.cfg.MaxWindows {
			return ErrPoolFull
		}
		w = &window{key: f.Window}
		p.windows[f.Window] = w
	}
	if w.pending != nil {
		w.replaced = append(w.replaced, w.pending.Seq)
	}
	w.pending, w.done, w.used = f, done, time.Now()
	if !w.busy && !w.ready {
		w.ready = true
		p.ready = append(p.ready, w)
		p.cond.Signal()
	}
	return nil
}

// CloseWindow frees a window's state (xpra's lost-window); a frame in
// flight finishes first.
func (p *Pool) CloseWindow(key uint64) {
	p.mu.Lock()
	w := p.windows[key]
	if w == nil || w.busy || w.pending != nil {
		p.mu.Unlock()
		return
	}
	delete(p.windows, key)
	p.mu.Unlock()
	if w.state != nil {
		p.backend.Close(w.state)
	}
}

func (p *Pool) work() {
	defer p.wg.Done()
	jobs := make([]Job, 0, p.cfg.BatchSize)
	dones := make([]func(Result), 0, p.cfg.BatchSize)
	repl := make([][]int64, 0, p.cfg.BatchSize)
	wins := make([]*window, 0, p.cfg.BatchSize)
	for {
		p.mu.Lock()
		for len(p.ready) == 0 && !p.closed {
			p.cond.Wait()
		}
		if p.closed && len(p.ready) == 0 {
			p.mu.Unlock()
			return
		}
		n := min(len(p.ready), p.cfg.BatchSize)
		jobs, dones, repl, wins = jobs[:0], dones[:0], repl[:0], wins[:0]
		for _, w := range p.ready[:n] {
			w.ready, w.busy = false, true
			jobs = append(jobs, Job{Frame: w.pending, State: &w.state})
			dones = append(dones, w.done)
			repl = append(repl, w.replaced)
			wins = append(wins, w)
			w.pending, w.done, w.replaced = nil, nil, nil
		}
		p.ready = append(p.ready[:0], p.ready[n:]...)
		p.mu.Unlock()

		p.backend.Encode(jobs)

		p.mu.Lock()
		now := time.Now()
		for _, w := range wins {
			w.busy, w.used = false, now
			if w.pending != nil && !w.ready {
				w.ready = true
				p.ready = append(p.ready, w)
				p.cond.Signal()
			}
		}
		p.mu.Unlock()
		// One frame per window is in flight, so results come back in
		// order per window.
		for i := range jobs {
			jobs[i].Out.Frame, jobs[i].Out.Replaced, jobs[i].Out.Batch = jobs[i].Frame, repl[i], len(jobs)
			dones[i](jobs[i].Out)
			jobs[i] = Job{}
		}
	}
}

// janitor frees the state of windows idle for IdleClose.
func (p *Pool) janitor() {
	defer p.wg.Done()
	t := time.NewTicker(max(p.cfg.IdleClose/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		var idle []any
		p.mu.Lock()
		now := time.Now()
		for k, w := range p.windows {
			if !w.busy && w.pending == nil && now.Sub(w.used) >= p.cfg.IdleClose {
				delete(p.windows, k)
				if w.state != nil {
					idle = append(idle, w.state)
				}
			}
		}
		p.mu.Unlock()
		for _, s := range idle {
			p.backend.Close(s)
		}
	}
}

// Windows is how many windows hold state or frames.
func (p *Pool) Windows() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.windows)
}

// Close finishes queued frames, stops the workers and frees every state.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
	for _, w := range p.windows {
		if w.state != nil {
			p.backend.Close(w.state)
		}
	}
	p.windows = nil
}
