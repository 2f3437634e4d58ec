package loop

// Flow control on the loop (docs/memory.md, "Back-pressure"). gnet 2.10
// reads every readable socket whatever its handler does, and has no way
// to stop reading one (gnet #712). When the relay asks to pause a socket
// (relay.Host.PauseReading) the loop parks it: it keeps a duplicate of the
// socket, closes gnet's connection (which deregisters it from the poller
// without touching the socket), and serves the session from a stand-in,
// parked, that holds the bytes gnet had read and writes straight to the
// socket. Nothing reads the socket, so its peer is slowed by TCP. When
// the relay resumes, the loop hands the socket to gnet again
// (EventLoop.Enroll) and swaps gnet's new connection in.
//
// Every step runs on the connection's loop: PauseReading and
// ResumeReading only mark the wish; flowTick, queued at once and then
// every flowEvery while a loop has flows, does the work, so that nothing
// re-enters a session from inside its own callbacks.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/xpraproxy/xpraproxy/relay"
)

// flowEvery is how often a loop with paused sockets lets the relay
// resume them (relay.Session.Flow). It bounds how long a fast reader's
// source stays paused after its kernel buffer drained: at 1 ms a socket
// buffer of a few hundred KB is never left empty.
const flowEvery = time.Millisecond

// parkAt is how much a paused socket may hold in gnet's buffer before it
// is parked. A fast reader's pause is over before its source sends this
// much more (its kernel buffer drains in a millisecond): parking, a dup,
// a close and an enrolment, is for sources that keep sending to a reader
// that does not keep up.
const parkAt = 16 << 10

// flow is a connection whose reading the relay paused, from the pause
// until gnet reads it again.
type flow struct {
	cn        *conn
	want      bool    // the relay wants it not read
	p         *parked // the stand-in, once parked
	enrolling bool    // being handed back to gnet
	// A splice's flow (spliceflow.go): what the destination held at the
	// last sign it read, and when.
	queued  int
	movedAt time.Time
	// handing: the session is being handed to another process
	// (handover.go): parked whatever it holds, and kept parked.
	handing bool
}

// parked stands in for a socket that gnet no longer reads. It holds
// what gnet had read (held) and what the session wrote while the kernel
// would not take it (out). It is a gnet.Conn only so that the TLS and
// WebSocket layers can sit on it; what it does not implement below is
// never asked of a session's socket (the embedded nil interface panics,
// which ends this connection only).
type parked struct {
	gnet.Conn
	srv           *Server
	fl            *flow
	el            gnet.EventLoop
	fd            int
	local, remote net.Addr
	held          []byte
	off           int
	pooled        *[]byte // held's backing while it came from heldBuffers
	out           []byte
	closed        bool
	// released: gnet's connection of the socket has closed, so every
	// byte gnet read is in held (a handover waits for it).
	released bool
}

// errParkedClosed: the session closed the parked socket.
var errParkedClosed = errors.New("loop: connection closed")

func (p *parked) Context() any              { return p.fl.cn }
func (p *parked) EventLoop() gnet.EventLoop { return p.el }
func (p *parked) LocalAddr() net.Addr       { return p.local }
func (p *parked) RemoteAddr() net.Addr      { return p.remote }
func (p *parked) Fd() int                   { return p.fd }
func (p *parked) InboundBuffered() int      { return len(p.held) - p.off }
func (p *parked) OutboundBuffered() int     { return len(p.out) }
func (p *parked) Wake(cb gnet.AsyncCallback) error {
	return errors.New("loop: wake of a parked connection")
}

func (p *parked) Peek(n int) ([]byte, error) {
	if n <= 0 {
		n = p.InboundBuffered()
	}
	if n > p.InboundBuffered() {
		return nil, io.ErrShortBuffer
	}
	return p.held[p.off : p.off+n], nil
}

func (p *parked) Discard(n int) (int, error) {
	if n <= 0 || n > p.InboundBuffered() {
		n = p.InboundBuffered()
	}
	p.off += n
	if p.off == len(p.held) {
		p.releaseHeld()
	}
	return n, nil
}

// heldBuffers lend stand-ins the room they read into (take, fill) while
// they hold bytes, in three sizes (16, 32 and 64 KiB): a fast reader's
// source is parked and unparked again and again, and each park allocated
// a 64 KiB buffer of its own, whatever it held (BENCHMARKS.md, issue 25).
var heldBuffers = [3]sync.Pool{
	{New: func() any { b := make([]byte, 0, 16<<10); return &b }},
	{New: func() any { b := make([]byte, 0, 32<<10); return &b }},
	{New: func() any { b := make([]byte, 0, 64<<10); return &b }},
}

// heldClass is the heldBuffers size that n bytes fit, -1 when none.
func heldClass(n int) int {
	for i := range heldBuffers {
		if n <= 16<<10<<i {
			return i
		}
	}
	return -1
}

// room makes n bytes of room after what held has not delivered: a
// borrowed buffer that fits both when there is one, else one of its own.
func (p *parked) room(n int) {
	if cap(p.held)-len(p.held) >= n {
		return
	}
	unread := p.held[p.off:]
	need := len(unread) + n
	if k := heldClass(need); k >= 0 {
		bp := heldBuffers[k].Get().(*[]byte)
		b := append((*bp)[:0], unread...)
		p.releaseHeld()
		p.held, p.pooled = b, bp
		return
	}
	bigger := append(make([]byte, 0, need), unread...)
	p.releaseHeld()
	p.held = bigger
}

// releaseHeld drops held, giving its buffer back when it was borrowed.
func (p *parked) releaseHeld() {
	if p.pooled != nil {
		// held never outgrows a borrowed buffer (room makes the room
		// before every append), so *p.pooled still names its size.
		*p.pooled = (*p.pooled)[:0]
		heldBuffers[heldClass(cap(*p.pooled))].Put(p.pooled)
	}
	p.held, p.off, p.pooled = nil, 0, nil
}

func (p *parked) Read(b []byte) (int, error) {
	n := copy(b, p.held[p.off:])
	p.Discard(n)
	return n, nil
}

// Write sends b now if nothing waits before it, and keeps what the
// kernel does not take.
func (p *parked) Write(b []byte) (int, error) {
	if p.closed {
		return 0, net.ErrClosed
	}
	if len(p.out) > 0 {
		p.out = append(p.out, b...)
		return len(b), nil
	}
	sent := 0
	for sent < len(b) {
		n, err := unix.Write(p.fd, b[sent:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			p.fail(err)
			return sent, err
		}
		sent += n
	}
	p.out = append(p.out, b[sent:]...)
	return len(b), nil
}

func (p *parked) Writev(bs [][]byte) (int, error) {
	total := 0
	for _, b := range bs {
		n, err := p.Write(b)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Flush sends what the kernel did not take before.
func (p *parked) Flush() error {
	if p.closed || len(p.out) == 0 {
		return nil
	}
	out := p.out
	p.out = nil
	_, err := p.Write(out)
	return err
}

// Close closes the socket and, as gnet would, tells the connection's
// role at the loop's next turn.
func (p *parked) Close() error {
	p.fail(nil)
	return nil
}

// fail closes the socket after an error (nil: the session closed it)
// and delivers the close as gnet's OnClose would.
func (p *parked) fail(err error) {
	if p.closed {
		return
	}
	p.closed = true
	unix.Close(p.fd)
	p.releaseHeld()
	p.out = nil
	p.srv.dropFlow(p.fl)
	_ = p.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		p.srv.OnClose(p, err)
		return nil
	}))
}

// Slack is held's and out's spare capacity (relay.Slacker).
func (p *parked) Slack() int { return cap(p.held) - p.InboundBuffered() + cap(p.out) - len(p.out) }

// slackOf is what a layer below holds beyond its counts.
func slackOf(c relay.Conn) int {
	if sl, ok := c.(relay.Slacker); ok {
		return sl.Slack()
	}
	return 0
}

// fillStep is the most one fill reads.
const fillStep = 16 << 10

// fill reads what the socket has into held (the tail of a frame the
// session could not consume); false when there is nothing now or the
// socket ended.
func (p *parked) fill() bool {
	if p.off > 0 {
		p.held, p.off = p.held[:copy(p.held, p.held[p.off:])], 0
	}
	// One read of at most fillStep: the session asked for a frame's tail,
	// not for what a larger buffer has room for.
	p.room(fillStep)
	for {
		n, err := unix.Read(p.fd, p.held[len(p.held):len(p.held)+fillStep])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			p.fail(err)
			return false
		case n == 0:
			p.fail(io.EOF)
			return false
		}
		p.held = p.held[:len(p.held)+n]
		return true
	}
}

// take moves what the closing gnet connection c read into held.
func (p *parked) take(c gnet.Conn) {
	n := c.InboundBuffered()
	if n == 0 {
		return
	}
	b, err := c.Peek(n)
	if err == nil && !p.closed {
		p.room(len(b))
		p.held = append(p.held, b...)
	}
	c.Discard(n)
}

// socketOf is the connection under a relay.Conn's TLS and WebSocket
// layers: gnet's, or its stand-in; nil for a stream (which has a flow
// window of its own) or anything else.
func socketOf(c relay.Conn) gnet.Conn {
	if u, ok := c.(interface{ Unwrap() relay.Conn }); ok {
		c = u.Unwrap() // an encrypted client link (relay/aesconn.go)
	}
	if w, ok := c.(*wsConn); ok {
		c = w.Conn
	}
	switch v := c.(type) {
	case *tlsConn:
		return v.Conn
	case *parked:
		return v
	case *streamConn:
		return nil
	case gnet.Conn:
		return v
	}
	return nil
}

// setSocket puts c under cn's layers in place of old.
func (s *Server) setSocket(cn *conn, old, c gnet.Conn) {
	switch {
	case cn.sp != nil && cn == cn.sp.innerCn:
		cn.sp.inner = c
	case cn.tls != nil:
		cn.tls.Conn = c
		cn.tls.sock.c = c
	case cn.ws != nil:
		cn.ws.Conn = c
	default:
		cn.sess.Replace(old, c)
	}
}

// holdLayers stops (or lets) the TLS and WebSocket layers decode into
// their own buffers: while paused, the bytes stay in the socket's.
func holdLayers(cn *conn, hold bool) {
	if cn.tls != nil {
		cn.tls.hold = hold
	}
	if cn.ws != nil {
		cn.ws.hold = hold
	}
}

// pauseReading marks c's socket for parking (relay.Host.PauseReading).
func (s *Server) pauseReading(ls *loopState, c relay.Conn) {
	g := socketOf(c)
	if g == nil {
		return
	}
	cn := connOf(g)
	if cn == nil || cn.sess == nil {
		return
	}
	f := ls.flows[cn]
	if f == nil {
		f = &flow{cn: cn}
		ls.flows[cn] = f
	}
	f.want = true
	holdLayers(cn, true)
	s.flowSoon(ls)
}

// resumeReading undoes pauseReading (relay.Host.ResumeReading).
func (s *Server) resumeReading(ls *loopState, c relay.Conn) {
	g := socketOf(c)
	if g == nil {
		return
	}
	if f := ls.flows[connOf(g)]; f != nil && !f.handing {
		f.want = false
		holdLayers(f.cn, false)
		s.flowSoon(ls)
	}
}

// flowSoon queues a flowTick for ls's loop (loop only).
func (s *Server) flowSoon(ls *loopState) {
	if ls.flowQueued {
		return
	}
	ls.flowQueued = true
	_ = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		ls.flowQueued = false
		s.flowTick(ls)
		return nil
	}))
}

// flowArm runs flowTick again after flowEvery while ls has flows.
func (s *Server) flowArm(ls *loopState) {
	if ls.flowArmed || len(ls.flows) == 0 {
		return
	}
	ls.flowArmed = true
	time.AfterFunc(flowEvery, func() {
		_ = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			ls.flowArmed = false
			s.flowTick(ls)
			return nil
		}))
	})
}

// flowTick moves every flow of ls a step: the relay resumes what
// drained, paused sockets are parked, resumed ones handed back to gnet.
func (s *Server) flowTick(ls *loopState) {
	now := time.Now()
	for cn, f := range ls.flows {
		if cn.sp != nil {
			s.spliceFlow(f, now)
			continue
		}
		sess := cn.sess
		if sess == nil || sess.Closed() {
			s.dropFlow(f)
			continue
		}
		if f.p != nil {
			f.p.Flush()
		}
		if sess.Relaying() {
			sess.Flow()
		}
		switch {
		case f.enrolling:
		case f.p != nil && f.p.closed:
			s.dropFlow(f)
		case f.want && f.p == nil && sess.Relaying():
			s.park(f)
		case !f.want && f.p != nil:
			s.unpark(f, now)
		case f.p == nil:
			s.dropFlow(f) // reading again, or no longer relaying
		}
	}
	s.flowArm(ls)
}

// dropFlow forgets a flow whose socket gnet reads again or that closed.
func (s *Server) dropFlow(f *flow) {
	if f.cn.ls.flows[f.cn] == f {
		delete(f.cn.ls.flows, f.cn)
	}
	holdLayers(f.cn, false)
}

// park takes f's socket away from gnet. A socket with bytes queued in
// gnet is not parked (gnet's close would drop them): it is tried again at
// the next tick, and the session's buffer limit bounds it meanwhile.
func (s *Server) park(f *flow) {
	cn := f.cn
	g := socketOf(sessionSide(cn))
	if g == nil {
		s.dropFlow(f)
		return
	}
	if _, already := g.(*parked); already || g.OutboundBuffered() > 0 || (g.InboundBuffered() < parkAt && !s.overBudget() && !f.handing) {
		return
	}
	fd, err := unix.FcntlInt(uintptr(g.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return // out of descriptors: read on, bounded by the session's limit
	}
	p := &parked{srv: s, fl: f, el: cn.ls.el, fd: fd, local: g.LocalAddr(), remote: g.RemoteAddr()}
	p.take(g)
	s.setSocket(cn, g, p)
	f.p = p
	// gnet may read g again before its close runs: parking's role
	// moves those bytes to p too.
	g.SetContext(&conn{role: roleParking, pre: &pre{park: p}})
	_ = g.Close()
	s.parks.Add(1)
}

// parkSoon parks c's socket at once when the relay paused it and it
// holds enough — anything at all while the proxy is over its buffer
// budget, so that the budget holds where bytes enter; from OnTraffic,
// once the bytes are handled.
func (s *Server) parkSoon(cn *conn, c gnet.Conn) {
	if f := cn.ls.flows[cn]; f != nil && f.want && f.p == nil && !f.enrolling &&
		(c.InboundBuffered() >= parkAt || s.overBudget()) && cn.sess != nil && cn.sess.Relaying() {
		s.park(f)
	}
}

// overBudget reports whether the proxy held more than --max-buffer-total
// at the last tick.
func (s *Server) overBudget() bool {
	return s.opts.MaxBufferTotal > 0 && s.total.Load() > s.opts.MaxBufferTotal
}

// sessionSide is the relay.Conn of cn's side of its session.
func sessionSide(cn *conn) relay.Conn {
	switch {
	case cn.sp != nil && cn == cn.sp.innerCn:
		if cn.sp.inner == nil {
			return nil
		}
		return cn.sp.inner
	case cn.ws != nil:
		return cn.ws
	case cn.tls != nil:
		return cn.tls
	case cn.sp != nil:
		return nil // a stream's client: no socket here
	case cn.role == roleServer:
		return cn.sess.ServerConn()
	default:
		return cn.sess.ClientConn()
	}
}

// unparkReads bounds how many reads of a frame's tail one tick makes
// for a parked socket before handing it back to gnet.
const unparkReads = 8

// unpark gives f's socket back to gnet. The session first consumes what
// the stand-in holds; a frame's tail it cannot consume is completed by
// reading the socket here, because gnet's new connection starts empty.
func (s *Server) unpark(f *flow, now time.Time) {
	p, cn := f.p, f.cn
	for i := 0; ; i++ {
		s.deliver(cn, p, now)
		if f.want || p.closed || (cn.sess != nil && !cn.sess.Reading()) {
			return
		}
		if p.InboundBuffered() == 0 {
			break
		}
		if i == unparkReads || !p.fill() {
			return // the rest at the next tick
		}
	}
	fd, err := unix.FcntlInt(uintptr(p.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	file := os.NewFile(uintptr(fd), "resumed")
	nc, err := net.FileConn(file)
	file.Close()
	if err != nil {
		return
	}
	ch, err := cn.ls.el.Enroll(gnet.NewContext(context.Background(), &conn{role: roleResumed, pre: &pre{park: p}}), nc)
	if err != nil {
		nc.Close()
		return
	}
	f.enrolling = true
	go func() {
		if r := <-ch; r.Err != nil {
			_ = cn.ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				f.enrolling = false
				s.log.Warn("cannot hand a paused connection back to the loop", "err", r.Err)
				p.fail(fmt.Errorf("loop: resume: %w", r.Err))
				return nil
			}))
		}
	}()
}

// deliver runs cn's traffic path over what its (parked) socket holds.
func (s *Server) deliver(cn *conn, p *parked, now time.Time) {
	var act gnet.Action
	switch {
	case cn.sp != nil:
		act = cn.sp.traffic(p, cn)
	case cn.tls != nil:
		err := cn.tls.decrypt()
		act = s.traffic(cn.tls, cn, now)
		if err != nil {
			act = gnet.Close
		}
	default:
		act = s.traffic(p, cn, now)
	}
	if act == gnet.Close {
		p.fail(nil)
	}
}

// resumed is OnOpen of a socket handed back to gnet: gnet's connection
// takes the stand-in's place.
func (s *Server) resumed(c gnet.Conn, p *parked) gnet.Action {
	f := p.fl
	f.enrolling = false
	if p.closed {
		c.SetContext(nil)
		return gnet.Close
	}
	cn := f.cn
	if len(p.out) > 0 {
		if _, err := c.Write(p.out); err != nil {
			c.SetContext(nil)
			p.fail(err)
			return gnet.Close
		}
	}
	c.SetContext(cn)
	s.setSocket(cn, p, c)
	p.closed = true // nothing may use the stand-in now
	unix.Close(p.fd)
	f.p = nil
	if !f.want {
		s.dropFlow(f)
	} else {
		s.flowSoon(cn.ls)
	}
	return gnet.None
}
