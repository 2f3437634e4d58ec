package loop

// Flow control in a splice (docs/memory.md, "Back-pressure"; docs/loop.md,
// "Root proxies: the splice"). A splice has two directions, each a source
// and a destination: the worker's end of the socketpair into the client's
// plaintext (its TLS layer or its stream), and the client's plaintext into
// the worker's end. When a destination holds more than spliceHigh unsent,
// the splice stops moving its source's bytes and pauses the source with
// the machinery the relay's sessions use (park.go): a flow keyed by the
// source's connection, the TLS layer's hold, and, once gnet has read
// parkAt more of it, the socket taken away from gnet. A stream's client
// is not parked: its bytes wait in the stream's window (stream.go), which
// then stops reading the stream. At each flow tick a destination under
// spliceLow lets its source be read again, and what the source holds is
// moved at once (no traffic may come to move it).
//
// What the supervisor holds per direction is then the high-water mark,
// one move (a gnet read, 64 KiB), and what gnet read of the paused source
// before it was parked (parkAt and a read); the worker's relay sees its
// client (the socketpair) not read and pauses its server in turn. A
// destination that reads nothing at all while its source is paused ends
// the splice after the session's stall timeout and twice drainTime: by
// then the worker has ended the session with its reason and given up
// waiting for the client to read it.

import (
	"fmt"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// The splice's marks: those of the relay's pipes (relay/flow.go).
const (
	spliceHigh = 32 << 10
	spliceLow  = 8 << 10
	// spliceStep is the most one move passes on before the destination's
	// mark is checked again.
	spliceStep = 64 << 10
)

// queuedFor is what the destination of src's bytes holds unsent.
func (sp *splice) queuedFor(src *conn) int {
	if src == sp.innerCn {
		return sp.client.OutboundBuffered()
	}
	if sp.inner == nil {
		return 0
	}
	return sp.inner.OutboundBuffered()
}

// paused reports whether src's bytes are not to be moved.
func (sp *splice) paused(src *conn) bool {
	f := sp.ls.flows[src]
	return f != nil && f.want
}

// pace pauses src when its destination holds more than spliceHigh; after
// every move.
func (sp *splice) pace(src *conn) {
	q := sp.queuedFor(src)
	if sp.ended || q <= spliceHigh {
		return
	}
	f := sp.ls.flows[src]
	if f == nil {
		f = &flow{cn: src}
		sp.ls.flows[src] = f
	}
	if f.want {
		return
	}
	f.want, f.queued, f.movedAt = true, q, time.Now()
	holdLayers(src, true)
	sp.srv.flowSoon(sp.ls)
}

// parkable: src is a socket this process can stop reading (the worker's
// end, a TLS client's), not a stream.
func (sp *splice) parkable(src *conn) bool {
	return src == sp.innerCn || src.tls != nil
}

// parkSoon parks src's socket c at once when src is paused and gnet holds
// enough of it; from traffic, once the bytes are handled.
func (sp *splice) parkSoon(src *conn, c gnet.Conn) {
	f := sp.ls.flows[src]
	if f != nil && f.want && f.p == nil && !f.enrolling && (c.InboundBuffered() >= parkAt || sp.srv.overBudget()) {
		sp.srv.park(f)
	}
}

// pull moves what src holds once it may be read again and was not
// parked (unpark delivers a parked socket's bytes itself).
func (sp *splice) pull(src *conn) {
	if sp.ended {
		return
	}
	if src == sp.innerCn {
		if sp.inner != nil {
			sp.toClient()
		}
		return
	}
	if src.tls != nil {
		if err := src.tls.decrypt(); err != nil {
			sp.toWorker()
			sp.end()
			src.tls.Conn.Close() // as traffic's gnet.Close
			return
		}
	}
	sp.toWorker()
}

// spliceFlow is flowTick's step for one direction of a splice: resume a
// source whose destination drained, cut one that reads nothing, park or
// unpark the socket.
func (s *Server) spliceFlow(f *flow, now time.Time) {
	sp, src := f.cn.sp, f.cn
	if f.p != nil {
		f.p.Flush()
	}
	if f.want {
		q := sp.queuedFor(src)
		switch {
		case sp.ended || q < spliceLow:
			f.want = false
			holdLayers(src, false)
			if f.p == nil && !f.enrolling {
				sp.pull(src)
			}
		case q < f.queued:
			f.queued, f.movedAt = q, now
		case sp.stall > 0 && now.Sub(f.movedAt) > sp.stall:
			who := "the client"
			if src != sp.innerCn {
				who = "the worker"
			}
			sp.fail(fmt.Sprintf("connection too slow: %s read nothing of %d bytes for %s", who, q, sp.stall.Round(time.Second)))
			return // the close drops the flows
		default:
			f.queued = q
		}
	}
	switch {
	case f.enrolling:
	case f.p != nil && f.p.closed:
		s.dropFlow(f)
	case f.want && f.p == nil:
		if sp.parkable(src) {
			s.park(f)
		}
	case !f.want && f.p != nil:
		s.unpark(f, now)
	case f.p == nil:
		s.dropFlow(f) // reading again
	}
}
