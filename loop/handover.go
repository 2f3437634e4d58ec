package loop

// Live sessions handed to another process (docs/upgrade.md, "Step 2").
// The old side stops reading both sockets of a relaying session with
// flow control's parking (park.go), waits until gnet has written what it
// queued for either peer, and then takes, in one loop callback, the
// session's state (relay.SessionState), what the parked stand-ins hold
// (bytes read and not consumed) and the sockets themselves. The new side
// puts both sockets behind parked stand-ins holding those bytes and lets
// the flow machinery hand them to gnet: the session consumes the carried
// bytes first, and no byte is lost or repeated.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/xpraproxy/xpraproxy/relay"
)

// HandoverWait bounds how long a session waits for gnet to write what it
// queued for its peers before it is handed over; a session whose reader
// is slower stays in this process.
const HandoverWait = 2 * time.Second

// handoverPoll is how often a session being handed over is looked at.
const handoverPoll = 2 * time.Millisecond

// maxCarried bounds the bytes read but not consumed that a handed session
// brings along, each side (a frame's header and a held packet at most,
// with what gnet read meanwhile).
const maxCarried = 48 << 20

// HandedSession is a relaying session on its way to another process:
// its state, what each socket had delivered that the session had not
// consumed, the client's WebSocket frame state, and both sockets (not
// part of the JSON: they travel as SCM_RIGHTS).
type HandedSession struct {
	State       *relay.SessionState `json:"state"`
	ClientBytes []byte              `json:"client_bytes,omitempty"` // raw: WebSocket frames not yet decoded
	ServerBytes []byte              `json:"server_bytes,omitempty"`
	WS          *WSState            `json:"ws,omitempty"`
	Client      *os.File            `json:"-"`
	Server      *os.File            `json:"-"`
	// ID is the session's id in the process that takes it (a root
	// proxy's main process numbers its workers' sessions); 0: that
	// process's next.
	ID uint64 `json:"-"`
}

// WSState is a WebSocket client link's place in its frames.
type WSState struct {
	Payload   []byte  `json:"payload,omitempty"` // decoded, not yet consumed by the relay
	Remaining int64   `json:"remaining,omitempty"`
	Mask      [4]byte `json:"mask"`
	Masked    bool    `json:"masked,omitempty"`
	MaskPos   int     `json:"mask_pos,omitempty"`
}

// Close closes the sockets (a handover that failed for good).
func (h *HandedSession) Close() {
	if h.Client != nil {
		h.Client.Close()
	}
	if h.Server != nil {
		h.Server.Close()
	}
}

// HandOver hands every relaying session this process can hand to give
// (an upgrade's conduit), one at a time as each becomes ready; a
// session give refuses comes back to this process (Resume). Sessions it
// cannot hand (TLS, streams, proxy video, a reader too slow to catch up
// within HandoverWait) stay. It returns how many went and how many
// relaying sessions stayed. Safe from any goroutine but a loop.
func (s *Server) HandOver(give func(*HandedSession) error) (handed, kept int) {
	// The candidates, from every loop; each is paused only when its turn
	// comes (handoverWindow at a time), so that a session's pause is its
	// own handover, not everyone's.
	type candidate struct {
		ls   *loopState
		sess *relay.Session
	}
	s.mu.Lock()
	loops := append([]*loopState(nil), s.loopOrder...)
	s.mu.Unlock()
	type listed struct {
		cands []candidate
		stay  int
	}
	lists := make(chan listed, len(loops))
	for _, ls := range loops {
		err := ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			var l listed
			for sess := range ls.sessions {
				switch {
				case s.handable(sess):
					l.cands = append(l.cands, candidate{ls, sess})
				case sess.Relaying():
					l.stay++ // TLS, a stream, proxy video, a TLS or ws backend
				}
			}
			lists <- l
			return nil
		}))
		if err != nil {
			lists <- listed{}
		}
	}
	var cands []candidate
	for range loops {
		l := <-lists
		cands = append(cands, l.cands...)
		kept += l.stay
	}
	out := make(chan *HandedSession, len(cands)+1)
	next, inflight := 0, 0
	startMore := func() {
		for inflight < handoverWindow && next < len(cands) {
			c := cands[next]
			next++
			inflight++
			err := c.ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				if _, ok := c.ls.sessions[c.sess]; !ok || !s.startHandover(c.ls, c.sess, out) {
					out <- nil // it ended, or can no longer be handed
				}
				s.handoverTick(c.ls)
				return nil
			}))
			if err != nil {
				out <- nil
			}
		}
	}
	startMore()
	for inflight > 0 {
		h := <-out
		inflight--
		if h == nil {
			kept++
		} else if err := give(h); err != nil {
			s.log.Warn("upgrade: session not handed over; it stays here", "session", h.State.ID, "err", err)
			if err := s.Resume(h); err != nil {
				s.log.Error("upgrade: cannot take a refused session back", "session", h.State.ID, "err", err)
				h.Close()
			}
			kept++
		} else {
			handed++
		}
		startMore()
	}
	return handed, kept
}

// handoverWindow is how many sessions are being handed over at once.
const handoverWindow = 128

// handable reports whether sess can be handed over now. Loop only.
func (s *Server) handable(sess *relay.Session) bool {
	if sess.Handable() != nil {
		return false
	}
	cc, sc := handableSide(sess.ClientConn(), true), handableSide(sess.ServerConn(), false)
	return cc != nil && sc != nil && cc.sess == sess && sc.sess == sess
}

// handing is a session being handed over, until it is sent or stays.
type handing struct {
	sess     *relay.Session
	cc       *conn
	flows    [2]*flow
	deadline time.Time
	out      chan<- *HandedSession
}

// startHandover begins handing sess over, if it can be: its sockets are
// paused and parked, and once gnet wrote what it queued the session is
// sent on out (nil: it stays), by the loop's handover ticks. Loop only.
func (s *Server) startHandover(ls *loopState, sess *relay.Session, out chan<- *HandedSession) bool {
	if !s.handable(sess) {
		return false
	}
	cc, sc := handableSide(sess.ClientConn(), true), handableSide(sess.ServerConn(), false)
	h := &handing{sess: sess, cc: cc, deadline: time.Now().Add(HandoverWait), out: out}
	for i, cn := range [...]*conn{cc, sc} {
		f := ls.flows[cn]
		if f == nil {
			f = &flow{cn: cn}
			ls.flows[cn] = f
		}
		f.want, f.handing = true, true
		holdLayers(cn, true)
		h.flows[i] = f
	}
	if ls.handing == nil {
		ls.handing = map[*relay.Session]*handing{}
	}
	ls.handing[sess] = h
	s.flowSoon(ls)
	return true
}

// handoverTick moves every session of ls being handed over a step, and
// comes back every handoverPoll while any is left: one timer per loop,
// however many sessions. Loop only.
func (s *Server) handoverTick(ls *loopState) {
	ls.handArmed = false
	now := time.Now()
	for sess, h := range ls.handing {
		hs, done, err := s.handoverStep(sess, h.cc, h.flows)
		if err == nil && !done && now.After(h.deadline) {
			err = errors.New("its peers did not read what was queued for them in time")
		}
		switch {
		case err != nil:
			if !sess.Closed() {
				s.log.Info("upgrade: session stays in this process", "session", sess.ID, "err", err)
			}
			for _, f := range h.flows {
				f.handing, f.want = false, false
				holdLayers(f.cn, false)
			}
			s.flowSoon(ls)
			delete(ls.handing, sess)
			h.out <- nil
		case done:
			delete(ls.handing, sess)
			h.out <- hs
		}
	}
	if len(ls.handing) == 0 || ls.handArmed {
		return
	}
	ls.handArmed = true
	time.AfterFunc(handoverPoll, func() {
		err := ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			s.handoverTick(ls)
			return nil
		}))
		if err != nil {
			// The loop is gone, and its sessions with it.
			for sess, h := range ls.handing {
				delete(ls.handing, sess)
				h.out <- nil
			}
		}
	})
}

// handableSide is the conn of a session's side when its socket can be
// handed over: a plain socket (gnet's or parked), under WebSocket framing
// for a client; never TLS or a stream.
func handableSide(c relay.Conn, client bool) *conn {
	if c == nil {
		return nil
	}
	if w, ok := c.(*wsConn); ok {
		if !client {
			return nil
		}
		c = w.Conn
	}
	switch c.(type) {
	case *parked, gnet.Conn:
	default:
		return nil
	}
	cn := connOf(c.(gnet.Conn))
	if cn == nil || cn.tls != nil || (!client && cn.ws != nil) {
		return nil
	}
	return cn
}

// handoverStep moves a session being handed over a step: done once both
// sockets are parked, gnet's close of each has run (what it read is in
// the stand-in) and nothing is left to write; then the session is taken
// out of this process. Loop only.
func (s *Server) handoverStep(sess *relay.Session, cc *conn, flows [2]*flow) (*HandedSession, bool, error) {
	if !sess.Relaying() {
		return nil, false, errors.New("it ended")
	}
	ready := true
	for _, f := range flows {
		if f.p == nil && !f.enrolling {
			s.park(f)
		}
		if f.p == nil || !f.p.released {
			ready = false
			continue
		}
		if f.p.closed {
			return nil, false, errors.New("a socket closed")
		}
		f.p.Flush()
		if f.p.OutboundBuffered() > 0 {
			ready = false
		}
	}
	if !ready {
		return nil, false, nil
	}
	st, err := sess.State()
	if err != nil {
		return nil, false, err
	}
	pc, ps := flows[0].p, flows[1].p
	if pc.InboundBuffered() > maxCarried || ps.InboundBuffered() > maxCarried {
		return nil, false, errors.New("too much read and not consumed")
	}
	h := &HandedSession{State: st, ClientBytes: pc.takeHeld(), ServerBytes: ps.takeHeld()}
	if w := cc.ws; w != nil {
		// A client accepted here has no Link yet: its framing is the
		// loop's to describe.
		st.Link = relay.Link{Transport: "ws", RequireMask: w.requireMask}
		h.WS = &WSState{Payload: append([]byte(nil), w.in[w.off:]...), Remaining: w.remaining,
			Mask: w.mask, Masked: w.masked, MaskPos: w.maskPos}
	}
	h.Client, h.Server = pc.handOver("client"), ps.handOver("server")
	for _, f := range flows {
		s.dropFlow(f)
	}
	sess.HandedOver()
	cc.t.closed()
	s.dropSession(cc)
	return h, true, nil
}

// takeHeld is a copy of what the stand-in holds.
func (p *parked) takeHeld() []byte {
	if p.InboundBuffered() == 0 {
		return nil
	}
	return append([]byte(nil), p.held[p.off:]...)
}

// handOver gives the stand-in's socket up: the caller owns the file, and
// nothing here touches the socket again.
func (p *parked) handOver(name string) *os.File {
	p.closed = true
	p.releaseHeld()
	p.out = nil
	return os.NewFile(uintptr(p.fd), name)
}

// Resume takes a handed session into this process: both sockets behind
// stand-ins that hold the carried bytes, on one of the loops, whose flow
// machinery delivers those bytes to the session and then hands the
// sockets to gnet. It owns h's files from the call, whether it fails or
// not. Safe from any goroutine but a loop.
func (s *Server) Resume(h *HandedSession) error {
	cfg := s.resumeConfig()
	switch {
	case cfg == nil:
		h.Close()
		return errors.New("loop: no configuration for a handed session")
	case h.State == nil || h.Client == nil || h.Server == nil:
		h.Close()
		return errors.New("loop: a handed session without its state or sockets")
	case len(h.ClientBytes) > maxCarried || len(h.ServerBytes) > maxCarried:
		h.Close()
		return errors.New("loop: a handed session carries too many bytes")
	case (h.WS != nil) != (h.State.Link.Transport == "ws"):
		h.Close()
		return errors.New("loop: a handed session's WebSocket state does not match its link")
	}
	if w := h.WS; w != nil && (w.Remaining < 0 || w.Remaining > int64(cfg.MaxPacketSize)+1<<20 ||
		w.MaskPos < 0 || len(w.Payload) > maxCarried) {
		h.Close()
		return errors.New("loop: a handed session's WebSocket state is out of bounds")
	}
	pc, err := standIn(h.Client, h.ClientBytes)
	if err != nil {
		h.Close()
		return err
	}
	ps, err := standIn(h.Server, h.ServerBytes)
	if err != nil {
		unix.Close(pc.fd)
		h.Server.Close()
		return err
	}
	ls := s.pickLoop()
	if ls == nil {
		unix.Close(pc.fd)
		unix.Close(ps.fd)
		return errors.New("loop: server not running")
	}
	res := make(chan error, 1)
	err = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		res <- s.resumeOn(ls, cfg, h, pc, ps)
		return nil
	}))
	if err != nil {
		unix.Close(pc.fd)
		unix.Close(ps.fd)
		return fmt.Errorf("loop: resume: %w", err)
	}
	return <-res
}

// resumeOn rebuilds the session on ls's loop. Loop only.
func (s *Server) resumeOn(ls *loopState, cfg *relay.Config, h *HandedSession, pc, ps *parked) error {
	cc, sc := &conn{role: roleClient, ls: ls}, &conn{role: roleServer, ls: ls}
	fc, fs := &flow{cn: cc, p: pc}, &flow{cn: sc, p: ps}
	pc.srv, pc.fl, pc.el = s, fc, ls.el
	ps.srv, ps.fl, ps.el = s, fs, ls.el
	var client relay.Conn = pc
	if w := h.WS; w != nil {
		cc.ws = newWSConn(pc, int64(cfg.MaxPacketSize)+1<<20)
		cc.ws.requireMask = h.State.Link.RequireMask || s.opts.WSRequireMask
		cc.ws.in = append(cc.ws.in, w.Payload...)
		cc.ws.remaining, cc.ws.mask, cc.ws.masked, cc.ws.maskPos = w.Remaining, w.Mask, w.Masked, w.MaskPos
		client = cc.ws
	}
	id := h.ID
	if id == 0 {
		id = s.nextID.Add(1)
	}
	sess, err := relay.ResumeSession(id, cfg, &host{srv: s, el: ls.el, ls: ls}, client, ps, h.State, time.Now())
	if err != nil {
		unix.Close(pc.fd)
		unix.Close(ps.fd)
		return fmt.Errorf("loop: resume: %w", err)
	}
	cc.sess, sc.sess = sess, sess
	ls.flows[cc], ls.flows[sc] = fc, fs
	ls.sessions[sess] = struct{}{}
	s.count.Add(1)
	s.flowSoon(ls) // delivers the carried bytes, then gnet reads the sockets
	return nil
}

// standIn is a parked stand-in for a handed socket, holding the bytes
// read from it before; it owns f's descriptor (f is closed).
func standIn(f *os.File, held []byte) (*parked, error) {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("loop: a handed socket: %w", err)
	}
	local, remote := nc.LocalAddr(), nc.RemoteAddr()
	nc.Close()
	// Not f.Fd(), which would make the socket blocking for a moment.
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("loop: a handed socket: %w", err)
	}
	fd := -1
	cerr := rc.Control(func(raw uintptr) { fd, err = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0) })
	if err = errors.Join(cerr, err); err != nil {
		return nil, fmt.Errorf("loop: a handed socket: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("loop: a handed socket: %w", err)
	}
	return &parked{fd: fd, local: local, remote: remote, held: held, released: true}, nil
}

// resumeConfig is the relay configuration of handed sessions: the
// server's own (a worker's), else its first listener's.
func (s *Server) resumeConfig() *relay.Config {
	if s.opts.Config != nil {
		return s.opts.Config
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.slots {
		if l := sl.cur.Load(); l != nil && l.Config != nil {
			return l.Config
		}
	}
	for _, l := range s.listeners {
		if l.Config != nil {
			return l.Config
		}
	}
	return nil
}

// NewID is a session id of this server's numbering, for a session a
// worker takes on its behalf (a root proxy's handed session). Safe from
// any goroutine.
func (s *Server) NewID() uint64 { return s.nextID.Add(1) }
