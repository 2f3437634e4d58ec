package relay

// The end of a session: disconnect reasons, closing both sockets with a
// grace for the reason to arrive, the sweep that enforces timeouts and
// backpressure, and the ways the reactor ends a session.

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
)

func (s *Session) relayError(p *pipe, err error) {
	if s.state != stateRelay {
		return
	}
	why := CloseServerError
	if p.toServer {
		why = CloseClientError
	}
	var be bridgeError
	if errors.As(err, &be) {
		why = CloseBridgeError
	}
	if p.toServer {
		s.logger().Info("invalid packet from client", "err", err)
		s.disconnect(why, "protocol error", strings.TrimPrefix(err.Error(), "frame: "))
	} else {
		s.logger().Warn("invalid packet from server", "err", err)
		s.disconnect(why, "server error", "invalid packet from the server")
	}
}

// send writes a packet of the proxy's own to the client, in the client's
// encoder, uncompressed (these packets are small).
func (s *Session) send(p frame.Packet) {
	bb, err := encodeOwn(frame.Writer{Encoding: s.enc}, p)
	if err != nil {
		s.logger().Error("cannot encode packet", "packet", p.String(), "err", err)
		return
	}
	s.client.Write(bb.B)
	putOwn(bb)
}

// disconnect sends the client an xpra disconnect packet (or xpra's text
// line before a hello) and ends the session for why (its access record);
// the server, if any, is told the client is gone.
func (s *Session) disconnect(why CloseReason, reason string, extra ...string) {
	if s.state == stateClosing || s.state == stateClosed || s.state == stateFinish {
		return
	}
	s.ending(why, reason, extra...)
	if s.state == stateRelay && s.s2c != nil && !s.s2c.finishPacket() {
		// The client is in the middle of a packet whose rest is not
		// here: a packet of ours now would corrupt its stream.
		if s.finishFirst(reason, extra) {
			return
		}
		s.closeMidPacket(reason)
		return
	}
	s.say(reason, extra)
}

// say sends the disconnect reason, tells the server, and begins the close.
func (s *Session) say(reason string, extra []string) {
	if s.helloSeen {
		p := frame.Packet{"disconnect", reason}
		for _, e := range extra {
			p = append(p, e)
		}
		s.send(p)
	} else {
		s.client.Write([]byte("disconnect: " + strings.Join(append([]string{reason}, extra...), ", ") + "\n"))
	}
	s.closeServer("client connection lost")
	s.beginClose()
}

// closeMidPacket closes a client whose packet in progress cannot be
// finished: it cannot be sent the reason.
func (s *Session) closeMidPacket(reason string) {
	s.logger().Info("closing mid-packet; the client cannot be sent the reason", "reason", reason)
	s.closeServer("client connection lost")
	s.beginClose()
}

// finishLimit bounds the bytes a disconnect may still forward to end the
// packet the client is in the middle of; finishTimeout bounds the wait
// for them. Past either, the client is closed without the reason.
const (
	finishLimit   = 1 << 20
	finishTimeout = 5 * time.Second
)

// finishFirst defers a disconnect until the server→client stream reaches
// a packet boundary: the pipe stops everything but the rest of the packet
// in progress (a raw chunk cut through, or chunks waiting for their main
// packet), reads the server again even if flow control had paused it, and
// the reason follows that packet (continueFinish). It reports whether
// the disconnect waits; a bridged stream (whose frames are rewritten
// whole) or a server already gone cannot finish.
func (s *Session) finishFirst(reason string, extra []string) bool {
	p := s.s2c
	if s.server == nil || p.bridge != nil {
		return false
	}
	s.waiting = &pendingDisconnect{reason: reason, extra: extra}
	s.state = stateFinish
	s.deadline = time.Now().Add(finishTimeout)
	s.finishBytes = 0
	if p.paused {
		p.unpause()
	}
	s.host.Watch(s)
	return true
}

// pendingDisconnect is a reason waiting for the client's packet in
// progress to end (stateFinish).
type pendingDisconnect struct {
	reason string
	extra  []string
}

// continueFinish forwards the rest of the packet in progress as it
// arrives, then sends the waiting reason; past finishLimit bytes or the
// deadline, or when the server is gone, the client is closed without it.
func (s *Session) continueFinish(now time.Time) {
	p := s.s2c
	before := p.Bytes
	done := s.server != nil && p.finishPacket()
	s.finishBytes += int(p.Bytes - before)
	pd := s.waiting
	switch {
	case done:
		s.waiting = nil
		s.say(pd.reason, pd.extra)
	case s.server == nil || s.finishBytes > finishLimit || now.After(s.deadline):
		s.waiting = nil
		s.closeMidPacket(pd.reason)
	}
}

func (s *Session) closeServer(why string) {
	if s.server == nil {
		return
	}
	if (s.state == stateRelay || s.state == stateFinish) && (s.c2s == nil || s.c2s.finishPacket()) {
		if bb, err := encodeOwn(s.serverWriter(), frame.Packet{"disconnect", "server shutdown", why}); err == nil {
			s.server.Write(bb.B)
			putOwn(bb)
		}
	}
	s.server.Close()
	s.server = nil
}

// beginClose stops reading the client, half-closes its socket once our
// last bytes are out, and closes it after closeGrace (Sweep) so that the
// client can read the reason.
func (s *Session) beginClose() {
	s.host.Watch(s)
	now := time.Now()
	s.state = stateClosing
	s.deadline = now.Add(closeGrace)
	s.drainBy = now.Add(closeDrain)
	if _, ws := s.client.(closeFramer); ws {
		// WebSocket: the close frame goes after the grace (Sweep), as
		// xpra's server sends it when it hangs up; shutting the socket
		// first would make a browser report an abnormal closure (1006),
		// reconnect and lose the reason it was just sent, and a frame
		// right behind the disconnect races it in xpra's own clients.
		return
	}
	if s.client.OutboundBuffered() == 0 {
		shutdownWrite(s.client)
	}
}

// closeWriter is a client connection with an end-of-stream message of its
// own before the socket's sending side is shut (TLS's close_notify).
type closeWriter interface{ CloseWrite() error }

// shutdownWrite half-closes the client's side: the last bytes are out.
func shutdownWrite(c Conn) {
	if cw, ok := c.(closeWriter); ok {
		cw.CloseWrite()
		return
	}
	syscall.Shutdown(c.Fd(), syscall.SHUT_WR)
}

// OnClientClosed: the client's socket is gone.
func (s *Session) OnClientClosed(err error) {
	s.ending(CloseClientGone, "client connection lost")
	if s.state == stateRelay {
		s.logger().Info("client connection lost", "user", s.logUser(), "err", err)
	}
	if s.cfg.Pools != nil && s.state != stateHandedOff {
		s.cfg.Pools.Release(s.ID)
	}
	if s.cfg.UserLimit != nil && s.state != stateHandedOff {
		s.cfg.UserLimit.Release(s.ID)
	}
	s.closeServer("client connection lost")
	s.state = stateClosed
	s.finish(time.Now())
}

// OnServerClosed: the backend's socket is gone.
func (s *Session) OnServerClosed(err error) {
	if s.state == stateFinish {
		s.server = nil
		s.continueFinish(time.Now())
		return
	}
	if s.state != stateRelay {
		return
	}
	s.server = nil
	s.logger().Info("server connection lost", "user", s.logUser(), "err", err)
	s.disconnect(CloseServerGone, "server shutdown", "server connection lost")
}

// Sweep enforces the timeouts and backpressure; called on the loop about
// every 100 ms. It returns the bytes the session holds in buffers.
func (s *Session) Sweep(now time.Time) int {
	switch s.state {
	case stateHello, stateChallenge, stateBusy, stateStop:
		if now.After(s.deadline) {
			s.logger().Info("login timeout", "user", s.logUser())
			why := CloseLoginTimeout
			if s.authed {
				why = CloseUnreachable // the target did not answer in time
			}
			s.disconnect(why, "login timeout")
		}
	case stateRelay:
		if err := s.s2c.heldTooLong(now); err != nil {
			s.relayError(s.s2c, err)
			break
		}
		s.maybePing(now)
		if s.cfg.IdleTimeout > 0 && now.Sub(s.active) > s.cfg.IdleTimeout {
			s.logger().Info("idle timeout", "user", s.logUser())
			s.disconnect(CloseIdleTimeout, "idle timeout")
			break
		}
		if s.stalled(now) {
			break
		}
		s.Flow()
		s.overLimit()
	case stateFinish:
		s.continueFinish(now)
	case stateClosing:
		drained := s.client.OutboundBuffered() == 0
		cf, ws := s.client.(closeFramer)
		if ws && !s.closeSent && drained && now.After(s.deadline) {
			cf.SendClose()
			s.closeSent = true
			drained = s.client.OutboundBuffered() == 0
		}
		done := !ws || s.closeSent
		if drained && done {
			shutdownWrite(s.client)
		}
		if (drained && done && now.After(s.deadline)) || now.After(s.drainBy) {
			s.client.Close()
			s.state = stateClosed
			s.finish(now)
		}
	}
	return s.Buffered()
}

// Buffered is the bytes held for this session in user space, counting
// what its connections' layers hold beyond what they report (Slacker).
func (s *Session) Buffered() int {
	n := held(s.client)
	if s.server != nil {
		n += held(s.server)
	}
	return n
}

// Slacker is a Conn whose layers hold memory that InboundBuffered and
// OutboundBuffered do not show: bytes of the layer below not yet decoded
// (TLS records, WebSocket frames) and the spare capacity of its own
// buffers. The session's limits and the proxy's budget count it, so that
// what is counted is what is resident.
type Slacker interface{ Slack() int }

func held(c Conn) int {
	n := c.InboundBuffered() + c.OutboundBuffered()
	if sl, ok := c.(Slacker); ok {
		n += sl.Slack()
	}
	return n
}

// overLimit ends the session when it holds more than its buffer limit.
func (s *Session) overLimit() {
	if s.state != stateRelay {
		return
	}
	if limit, held := s.bufferLimit(), s.Buffered(); limit > 0 && held > limit {
		s.logger().Warn("session buffer limit exceeded", "user", s.logUser(), "bytes", held)
		s.disconnect(CloseTooSlow, "connection too slow", fmt.Sprintf("more than %d bytes buffered", limit))
	}
}

// Shed ends the session because the proxy is over its global budget.
func (s *Session) Shed() {
	s.logger().Warn("global buffer budget exceeded", "user", s.logUser(), "bytes", s.Buffered())
	s.disconnect(CloseShed, "connection too slow", "proxy buffer budget exceeded")
}

// Forget drops a session whose connection turned out not to speak xpra
// (HTTP, TLS): nothing is written, the connection lives on elsewhere,
// and no access record is made for it.
func (s *Session) Forget() { s.state, s.recorded = stateClosed, true }

// Reject ends the session with a disconnect reason the client can show
// (bad input found by the transport, such as an oversized WebSocket
// frame).
func (s *Session) Reject(reason string, extra ...string) {
	s.logger().Info("connection rejected", "user", s.logUser(), "reason", reason, "detail", strings.Join(extra, " "))
	s.disconnect(CloseClientError, reason, extra...)
}

// Evict ends a session that has not logged in because a newer
// connection takes its place under the reactor's pre-login cap (the
// reactor chose it: the least advanced, longest waiting of the largest
// address block). It is logged at debug level only: a crowd is evicted
// by the thousand, and the reactor logs the evictions as a whole. The
// connection closes at the next sweep once the reason is out, without
// the close grace: a crowd that churns evictions must not hold file
// descriptors in closing connections.
func (s *Session) Evict(reason string, extra ...string) {
	if s.authed {
		return
	}
	s.cfg.Log.Debug("evicted before login", "session", s.ID, "peer", s.peer, "state", s.state.String())
	s.disconnect(CloseEvicted, reason, extra...)
	if s.state == stateClosing {
		s.deadline = s.started // already past
	}
}

// Stop ends the session on request (xpraproxy stop :proxy-ID), telling
// both peers why.
func (s *Session) Stop(why string) {
	s.logger().Info("stopping", "user", s.logUser(), "why", why)
	s.disconnect(CloseStopped, "server shutdown", why)
}

// ShutDown ends the session because the proxy is stopping (xpraproxy
// stop, a signal), telling both peers why.
func (s *Session) ShutDown(why string) { s.End(CloseShutdown, why) }

// End ends the session for reason r (the proxy stopping, an upgrade's
// drain), telling both peers why.
func (s *Session) End(r CloseReason, why string) {
	s.logger().Info("stopping", "user", s.logUser(), "why", why, "reason", r.String())
	s.disconnect(r, "server shutdown", why)
}
