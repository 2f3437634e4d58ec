package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/relay"
)

// A splice joins a client whose transport must stay in this process to
// the worker that relays its session (a root proxy, docs/privsep.md).
// TLS stays here because crypto/tls cannot hand a live session's keys to
// another process and the private key is root's alone; a stream's
// transport (an SSH channel, a QUIC stream) likewise lives in the library
// that holds its keys. The worker gets one end of a socketpair and reads
// the client's plaintext xpra stream from it as from any socket; the
// other end joins the client's loop, which moves the bytes between the
// two as they come, decrypting and encrypting on the way. No goroutine,
// and no packet is decoded here: the supervisor only moves plaintext.
//
// Both ends are connections of one loop; a splice is touched only there.
// Each direction has flow control (spliceflow.go): a destination that
// holds more than spliceHigh unsent stops the splice reading its source
// until it drains, so TCP (or the stream's window) slows the sender. The
// session's buffer limit stays as the bound for a source that could not
// be paused: past it the splice ends (both sockets close, the worker
// sees its client gone), since the bytes have no packet boundary here at
// which a disconnect could be written.
type splice struct {
	srv      *Server
	ls       *loopState
	id       uint64        // the session handed over, for logs
	client   spliceEnd     // the client's plaintext: its TLS layer, or its stream
	clientCn *conn         // the client's connection (its ticket)
	inner    gnet.Conn     // this process's end of the socketpair, once open
	innerCn  *conn         // its role
	max      int           // bytes one direction may hold queued
	stall    time.Duration // a paused direction whose destination reads nothing for this long ends (0: never)
	drainBy  time.Time     // the worker's end closed: the client gets what is queued until then
	ended    bool
}

// spliceEnd is the client's side of a splice: a tlsConn or a streamConn.
type spliceEnd interface {
	InboundBuffered() int
	OutboundBuffered() int
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Write(p []byte) (int, error)
	Close() error
	RemoteAddr() net.Addr
}

// drainTime bounds how long a client gets to read what its worker sent
// before closing.
const drainTime = 10 * time.Second

// splice turns the client connection cn (whose plaintext is end) into the
// client side of a splice and returns the socket the worker gets. It runs
// on the loop; the session leaves this loop's sets.
func (s *Server) splice(cn *conn, end spliceEnd) (*os.File, error) {
	if cn == nil || cn.sess == nil {
		return nil, errors.New("loop: splice: not a client session")
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: splice: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "splice")
	nc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		syscall.Close(fds[1])
		return nil, fmt.Errorf("loop: splice: %w", err)
	}
	sp := &splice{srv: s, ls: cn.ls, client: end, clientCn: cn, max: max(cn.sess.MaxBuffer(), 1<<20), id: cn.sess.ID}
	if st := cn.sess.StallTimeout(); st > 0 {
		// After the worker's own cut and its close (the rest of a
		// packet in progress, 5 s; the reason's drain, 10 s), so that a
		// client that reads again gets the reason.
		sp.stall = st + 2*drainTime
	}
	sp.innerCn = &conn{role: roleSplice, sp: sp, ls: cn.ls}
	el := cn.ls.el
	// gnet dups the socket and closes nc itself.
	ch, err := el.Enroll(gnet.NewContext(context.Background(), sp.innerCn), nc)
	if err != nil {
		nc.Close()
		syscall.Close(fds[1])
		return nil, fmt.Errorf("loop: splice: %w", err)
	}
	go func() {
		if r := <-ch; r.Err != nil {
			_ = el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				sp.fail("cannot join the worker's socket to the loop: " + r.Err.Error())
				return nil
			}))
		}
	}()
	s.dropSession(cn)
	cn.role, cn.sp, cn.sess, cn.ws = roleSplice, sp, nil, nil
	cn.ls.splices[sp] = struct{}{}
	s.spliced.Add(1)
	return os.NewFile(uintptr(fds[1]), "client"), nil
}

// opened: the worker's end is on the loop; what the client sent
// meanwhile goes first.
func (sp *splice) opened(c gnet.Conn) {
	if sp.ended {
		c.Close()
		return
	}
	sp.inner = c
	sp.toWorker()
}

// traffic moves what arrived on either gnet end to the other: the
// worker's bytes, or a TLS client's records.
func (sp *splice) traffic(c gnet.Conn, cn *conn) gnet.Action {
	if cn == sp.innerCn {
		sp.toClient()
		sp.parkSoon(cn, c)
		sp.unparked(c, "the worker")
		return gnet.None
	}
	err := cn.tls.decrypt()
	sp.toWorker()
	if err != nil {
		// The client closed its TLS stream (or broke it): the worker
		// sees its client gone once what came before is passed on.
		sp.end()
		return gnet.Close
	}
	sp.parkSoon(cn, c)
	sp.unparked(c, "the client")
	return gnet.None
}

// unparked bounds a paused source that could not be parked (bytes
// queued to it, out of descriptors): gnet goes on reading it.
func (sp *splice) unparked(c gnet.Conn, who string) {
	if n := c.InboundBuffered(); n > sp.max {
		sp.fail(fmt.Sprintf("%s sent more than %d bytes that could not be passed on", who, sp.max))
	}
}

// toWorker passes the client's plaintext to the worker.
func (sp *splice) toWorker() {
	n := sp.client.InboundBuffered()
	if n == 0 {
		return
	}
	if sp.ended {
		sp.client.Discard(n) // nobody to pass it to
		return
	}
	if sp.inner == nil {
		if n > sp.max {
			sp.fail(fmt.Sprintf("the client sent more than %d bytes before its worker was reached", sp.max))
		}
		return
	}
	// In steps, so that a destination holds at most the high-water mark
	// and one step when it stops reading.
	for ; n > 0 && !sp.ended && !sp.paused(sp.clientCn); n = sp.client.InboundBuffered() {
		k := min(n, spliceStep)
		b, _ := sp.client.Peek(k)
		_, err := sp.inner.Write(b)
		sp.client.Discard(k)
		if err != nil {
			return // the worker's end is closing: its close ends the splice
		}
		if sp.inner.OutboundBuffered() > sp.max {
			sp.fail(fmt.Sprintf("the worker did not read %d bytes of its client's", sp.inner.OutboundBuffered()))
			return
		}
		sp.pace(sp.clientCn)
	}
}

// toClient encrypts the worker's bytes to the client.
func (sp *splice) toClient() {
	n := sp.inner.InboundBuffered()
	if n == 0 {
		return
	}
	if sp.ended {
		sp.inner.Discard(n)
		return
	}
	for ; n > 0 && !sp.ended && !sp.paused(sp.innerCn); n = sp.inner.InboundBuffered() {
		k := min(n, spliceStep)
		b, _ := sp.inner.Peek(k)
		_, err := sp.client.Write(b)
		sp.inner.Discard(k)
		switch {
		case err != nil:
			sp.fail("cannot write to the client: " + err.Error())
			return
		case sp.client.OutboundBuffered() > sp.max:
			sp.fail(fmt.Sprintf("connection too slow: more than %d bytes buffered", sp.max))
			return
		}
		sp.pace(sp.innerCn)
	}
}

// held is the bytes the splice holds in user space.
func (sp *splice) held() int {
	n := sp.client.InboundBuffered() + sp.client.OutboundBuffered()
	if sl, ok := sp.client.(relay.Slacker); ok {
		n += sl.Slack() // ciphertext not yet decrypted, spare room
	}
	if sp.inner != nil {
		n += sp.inner.InboundBuffered() + sp.inner.OutboundBuffered() + slackOf(sp.inner)
	}
	return n
}

// closed: one end's connection is gone.
func (sp *splice) closed(cn *conn) {
	if cn != sp.innerCn {
		// The client: nothing more to relay.
		cn.t.closed()
		delete(sp.ls.splices, sp)
		sp.srv.spliced.Add(-1)
		sp.end()
		return
	}
	// The worker ended the session: the client gets what is queued (the
	// worker's disconnect packet), then close_notify.
	sp.inner = nil
	if sp.ended {
		return
	}
	sp.ended = true
	if sp.client.OutboundBuffered() == 0 {
		sp.client.Close()
		return
	}
	sp.drainBy = time.Now().Add(drainTime)
}

// end closes the worker's end (it sees its client gone).
func (sp *splice) end() {
	sp.ended = true
	if sp.inner != nil {
		sp.inner.Close()
	}
}

// fail ends both sides of a splice that cannot go on.
func (sp *splice) fail(why string) {
	if sp.ended {
		return
	}
	sp.srv.log.Warn("splice to the worker ended", "session", sp.id, "peer", sp.client.RemoteAddr().String(), "why", why)
	sp.end()
	sp.client.Close()
}

// sweep closes a drained client (loop only).
func (sp *splice) sweep(now time.Time) {
	if !sp.drainBy.IsZero() && (sp.client.OutboundBuffered() == 0 || now.After(sp.drainBy)) {
		sp.drainBy = time.Time{}
		sp.client.Close()
	}
}
