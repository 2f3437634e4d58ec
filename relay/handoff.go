package relay

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
	"github.com/xpraproxy/xpraproxy/route"
)

// Handoff is a logged-in client on its way to another process (a
// privilege-separated worker): everything the relay needs to connect it
// to its target and carry on. It travels as JSON beside the client's
// socket.
type Handoff struct {
	ID         uint64            `json:"id"`
	User       string            `json:"user"`
	Peer       string            `json:"peer"`
	Candidates []route.Candidate `json:"candidates"`      // tried in order (one, or a pool's)
	Pool       string            `json:"pool,omitempty"`  // the pool they come from
	Start      *StartRequest     `json:"start,omitempty"` // start a new session as the worker's user first
	Options    []authn.Option    `json:"options,omitempty"`
	// Hello is the client's hello packet as an xpra frame in the client's
	// own encoder, so that every value keeps its type.
	Hello   []byte    `json:"hello"`
	Started time.Time `json:"started"`
	// Link is what the accepting process learnt of the client's
	// transport that the worker must go on applying.
	Link Link `json:"link"`
	// Transport names the client's transport as the accepting process
	// knew it, for the worker's access record ("tcp", "wss", "ssh").
	Transport string `json:"transport,omitempty"`
	// AES is the client's encrypted link, if it has one (aes.go).
	AES *AESLink `json:"aes,omitempty"`
}

// Link is a client's transport as a handoff carries it: what the
// process that accepted the connection decided for it and the worker's
// relay must keep to.
type Link struct {
	// Transport is "ws" when the client speaks xpra in WebSocket frames
	// (the worker goes on framing); "" for a plain stream.
	Transport string `json:"transport,omitempty"`
	// RequireMask: the client must mask its WebSocket frames (its
	// upgrade came from a browser, or --websocket-require-mask).
	RequireMask bool `json:"require_mask,omitempty"`
	// TLS: the client's link is TLS, terminated by the accepting
	// process (which holds the key); the worker reads its plaintext.
	TLS bool `json:"tls,omitempty"`
}

// Transported is a client connection that wraps the xpra stream (TLS,
// WebSocket framing); HandoffLink describes it for a handoff, and fails
// while a frame is half read.
type Transported interface {
	HandoffLink() (Link, error)
}

// HandOffFunc passes a client's socket and its handoff to the worker for
// acct. It runs off the loop and may block; it owns client (a dup of the
// socket) whether it fails or not.
type HandOffFunc func(h *Handoff, acct authn.Account, client *os.File) error

// handOff moves the client to a worker: the host releases the client's
// connection as a socket for the worker (the socket itself, or the
// plaintext end of a splice when the transport stays here), so that
// this session reads nothing more from it.
func (s *Session) handOff(cands []route.Candidate, pool *route.Pool, start *StartRequest, acct authn.Account, opts []authn.Option) {
	if n := s.client.InboundBuffered(); n > 0 {
		// Bytes after the hello cannot travel with the socket: gnet has
		// already read them. A client has nothing to say before the
		// server's hello.
		s.disconnect(CloseClientError, "protocol error", "packet received before the server's hello")
		return
	}
	w := frame.Writer{Encoding: s.enc}
	hello, err := w.AppendPacket(nil, frame.Packet{"hello", s.caps})
	if err != nil {
		s.disconnect(CloseInternal, "server error", "cannot encode the client's hello")
		return
	}
	h := &Handoff{ID: s.ID, User: s.user, Peer: s.peer, Candidates: cands, Start: start,
		Options: opts, Hello: hello, Started: s.started, Transport: s.transport}
	if pool != nil {
		h.Pool = pool.Name
	}
	if t, ok := s.client.(Transported); ok {
		if h.Link, err = t.HandoffLink(); err != nil {
			s.disconnect(CloseClientError, "protocol error", err.Error())
			return
		}
	}
	sock := s.client
	if s.aes != nil {
		// The worker encrypts on where this process stops (docs/aes.md).
		if h.AES, err = s.aes.handoff(); err != nil {
			s.disconnect(CloseInternal, "server error", "cannot hand the encrypted link over")
			return
		}
		sock = s.aes.conn.Conn
	}
	s.admit()
	// From here the worker writes the access record, or fail below: the
	// loop's connection closes in Release, and that is no end here.
	s.state, s.recorded = stateHandedOff, true
	f, err := s.host.Release(sock)
	if err != nil {
		s.logger().Warn("cannot hand the client socket over", "err", err)
		s.state, s.recorded = stateBusy, false
		s.disconnect(CloseInternal, "server error", "cannot relay the connection")
		return
	}
	enc, log := s.enc, s.logger()
	s.login = login{}
	handOff := func() error { return s.cfg.HandOff(h, acct, f) }
	// The worker writes the access record of a session it took; one it
	// could not take is recorded here, from the handoff's goroutine.
	rec := s.accessRecord(time.Now())
	rec.Phase = PhaseTarget
	fail := func(why CloseReason, err error) {
		reason, msg := "server error", "cannot relay the connection"
		if he, ok := disconnect.Is(err, disconnect.HandOff); ok {
			reason, msg = he.Reason, he.Message
		}
		log.Warn("handoff failed", "user", logsafe.String(h.User), "uid", acct.UID, "err", err)
		rec.Reason, rec.Text = why, logsafe.String(reason+": "+msg)
		rec.Duration = time.Since(rec.Start)
		s.emit(rec)
		w := frame.Writer{Encoding: enc}
		if b, err := w.AppendPacket(nil, frame.Packet{"disconnect", reason, msg}); err == nil {
			f.SetWriteDeadline(time.Now().Add(time.Second))
			f.Write(b)
		}
		f.Close()
	}
	var err2 error
	queued := s.host.Go(WorkDial, func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic handing a client over", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				fail(CloseInternal, fmt.Errorf("panic: %v", r))
			}
		}()
		if err2 = handOff(); err2 != nil {
			fail(CloseInternal, err2)
		}
	}, func() {})
	if !queued {
		// The socket is ours alone now: answer from a goroutine of its
		// own, bounded by the write deadline.
		go fail(CloseBusy, &disconnect.Error{Stage: disconnect.HandOff, Reason: "server error", Message: "the proxy is too busy, try again later", Err: errors.New("work queue full")})
	}
}

// AdoptSession resumes a handed-off client in this process: the hello is
// decoded again and the backend dialed, as the process that authenticated
// it would have.
func AdoptSession(cfg *Config, host Host, client Conn, h *Handoff, now time.Time) (*Session, error) {
	s := NewSession(h.ID, cfg, host, client, now)
	s.peer, s.user, s.started = h.Peer, h.User, h.Started
	if h.Link != (Link{}) {
		link := h.Link
		s.link = &link
	}
	if h.AES != nil {
		a, err := adoptAES(s.client, h.AES, cfg.MaxPacketSize)
		if err != nil {
			return nil, fmt.Errorf("relay: handoff %d: %w", h.ID, err)
		}
		s.aes, s.client = a, a.conn
	}
	s.transport = h.Transport
	if s.transport == "" {
		s.transport = TransportOfLink(h.Link, s.transport)
	}
	var (
		r   frame.Reader
		err error
	)
	r.MaxPacketSize = frame.AbsMaxPacketSize
	var p frame.Packet
	buf := h.Hello
	for p == nil && len(buf) > 0 {
		var n int
		if p, n, err = r.Next(buf); err != nil {
			break
		}
		buf = buf[n:]
	}
	if err != nil || p.Type() != "hello" || len(p) < 2 {
		return nil, fmt.Errorf("relay: handoff %d: bad hello: %v", h.ID, err)
	}
	caps, ok := p[1].(frame.Dict)
	if !ok {
		return nil, fmt.Errorf("relay: handoff %d: hello without capabilities", h.ID)
	}
	s.caps, s.enc, s.helloSeen = caps, r.Header().Flags.Encoding(), true
	s.claimed = ClaimedVersion(caps)
	s.authed = true // by the process that handed it over
	s.deadline = now.Add(cfg.ConnectTimeout + time.Second)
	// The pools live in the process that picked the candidates: it is
	// told which member was used and which failed.
	var track PoolTracker
	if cfg.Track != nil {
		track = cfg.Track(h.Pool)
	}
	if h.Start != nil {
		s.startAndConnect(h.Start, track, h.Options)
	} else {
		s.connect(h.Candidates, h.Pool, track, h.Options)
	}
	return s, nil
}
