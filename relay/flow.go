package relay

import (
	"fmt"
	"time"
)

// Flow control (docs/memory.md, "Back-pressure"). A pipe whose
// destination holds more than highWater unsent bytes stops consuming its
// source and tells the reactor (Host.PauseReading), which stops reading
// the source's socket once it too holds a little (loop/park.go): the
// source's peer is then slowed by TCP, and the bytes in flight wait in
// the kernel's socket buffers instead of the proxy's. Once the
// destination is under lowWater the pipe consumes again, at the next
// traffic either way or the reactor's next flow tick, and the reactor
// reads again (Host.ResumeReading). The marks are small because every
// paused session holds up to highWater+flushStep in user space; the
// kernel's send buffer, not ours, keeps a fast reader busy while its
// source is paused.
const (
	highWater = 32 << 10
	lowWater  = 8 << 10
	// flushStep bounds one writev to a destination that is already
	// backed up, so that it holds at most highWater+flushStep.
	flushStep = 16 << 10
)

// checkWater pauses the pipe when its destination is over the high-water
// mark; after every write.
func (p *pipe) checkWater() {
	if p.paused || p.dst.OutboundBuffered() <= highWater {
		return
	}
	p.paused = true
	p.pausedAt = time.Now().UnixNano()
	p.s.host.PauseReading(p.src)
}

// unpause lets the pipe consume again and the reactor read its source.
func (p *pipe) unpause() {
	p.paused = false
	p.s.host.ResumeReading(p.src)
}

// Flow resumes the pipes whose destination drained under the low-water
// mark and forwards what their source holds. The reactor calls it soon
// after a pause (a few milliseconds, more often than Sweep) so that a
// fast reader whose kernel buffer drains is never left waiting. It
// reports whether a pipe is still paused. Loop only.
func (s *Session) Flow() bool {
	if s.state != stateRelay {
		return false
	}
	paused := false
	for _, p := range [...]*pipe{s.c2s, s.s2c} {
		if p.paused && p.dst.OutboundBuffered() <= lowWater {
			p.unpause()
			s.pump(p)
			if s.state != stateRelay {
				return false
			}
		}
		paused = paused || p.paused
	}
	return paused
}

// drained resumes, before any traffic is handled, the pipes whose
// destination drained: a fast reader's source resumes at its next read
// or at the next acknowledgement coming back, not at a timer.
func (s *Session) drained() {
	for _, p := range [...]*pipe{s.c2s, s.s2c} {
		if p.paused && p.dst.OutboundBuffered() <= lowWater {
			p.unpause()
		}
	}
}

// stalled ends the session when a pipe has been paused without a break
// for StallTimeout: its destination read nothing in that time. Slow
// readers are slowed, not cut; a reader that stopped is cut only after
// this patience, with the reason.
func (s *Session) stalled(now time.Time) bool {
	if s.cfg.StallTimeout <= 0 {
		return false
	}
	for _, p := range [...]*pipe{s.c2s, s.s2c} {
		if p.paused && now.UnixNano()-p.pausedAt > int64(s.cfg.StallTimeout) {
			s.logger().Info("peer stopped reading", "user", s.logUser(), "direction", p.name(), "queued", p.dst.OutboundBuffered())
			s.disconnect(CloseTooSlow, "connection too slow", fmt.Sprintf("nothing read for %s", s.cfg.StallTimeout.Round(time.Second)))
			return true
		}
	}
	return false
}

// bufferLimit is what the session may hold: MaxSessionBuffer, plus the
// frame a pipe must hold whole (a bridged or inspected packet) when that
// is larger.
func (s *Session) bufferLimit() int {
	n := s.cfg.MaxSessionBuffer
	if n <= 0 {
		return 0
	}
	for _, p := range [...]*pipe{s.c2s, s.s2c} {
		if p != nil && p.need > 0 {
			n = max(n, p.need+n/2)
		}
	}
	return n
}

// ClientConn and ServerConn are the session's connections as it uses
// them now (nil: none). Loop only.
func (s *Session) ClientConn() Conn { return s.client }
func (s *Session) ServerConn() Conn { return s.server }

// Replace puts c in the place of old wherever the session uses it: the
// reactor swaps a socket whose reading it paused for what stands in for
// it, and back. Loop only.
func (s *Session) Replace(old, c Conn) {
	if s.client == old {
		s.client = c
	}
	if s.aes != nil && s.aes.conn.Conn == old {
		s.aes.conn.Conn = c // the socket under an encrypted link
	}
	if cc, ok := s.server.(*cipherConn); ok && cc.Conn == old {
		cc.Conn = c
	}
	if s.server == old {
		s.server = c
	}
	for _, p := range [...]*pipe{s.c2s, s.s2c} {
		if p == nil {
			continue
		}
		if p.src == old {
			p.src = c
		}
		if p.dst == old {
			p.dst = c
		}
	}
}
