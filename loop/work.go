package loop

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// job is off-loop work for a session: work runs on a pool goroutine, done
// then on the session's loop.
type job struct {
	el         gnet.EventLoop
	work, done func()
}

// workPool runs jobs on at most max goroutines, started as needed and
// ended after a while without work; at most queue jobs wait. Both numbers
// bound memory: a flood of logins finds the queue full and is refused
// with a reason instead of piling up goroutines.
type workPool struct {
	srv     *Server
	jobs    chan job
	max     int32
	running atomic.Int32
	active  atomic.Int32 // jobs being worked on
}

func newWorkPool(srv *Server, max, queue int) *workPool {
	return &workPool{srv: srv, jobs: make(chan job, queue), max: int32(max)}
}

// submit queues j; false when the queue is full. Safe from any goroutine.
func (p *workPool) submit(j job) bool {
	select {
	case p.jobs <- j:
	default:
		return false
	}
	for {
		n := p.running.Load()
		if n >= p.max || int(n) > len(p.jobs)+int(p.active.Load()) {
			return true // enough workers for what waits
		}
		if p.running.CompareAndSwap(n, n+1) {
			go p.worker()
			return true
		}
	}
}

// busy reports whether any job is queued or running.
func (p *workPool) busy() bool { return len(p.jobs) > 0 || p.active.Load() > 0 }

const workerIdle = 10 * time.Second

// run does a job's work. A panic there (an authentication module, a
// router, a session start) is the job's failure, never the process's:
// relay's sessions catch their own and end that login with a reason, and
// this is the last line for any other job. done still runs on the loop.
func (p *workPool) run(j job) {
	defer func() {
		if r := recover(); r != nil {
			p.srv.log.Error("panic in off-loop work", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	j.work()
}

func (p *workPool) worker() {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		select {
		case j := <-p.jobs:
			p.active.Add(1)
			p.run(j)
			p.active.Add(-1)
			p.srv.handshakes.Add(1)
			_ = j.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				j.done()
				return nil
			}))
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(workerIdle)
		case <-idle.C:
			p.running.Add(-1)
			// A job queued between the timer and the decrement would
			// wait for the next submit: take it now if so.
			if len(p.jobs) > 0 {
				if p.running.Add(1) <= p.max {
					idle.Reset(workerIdle)
					continue
				}
				p.running.Add(-1)
			}
			return
		}
	}
}
