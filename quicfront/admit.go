package quicfront

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"github.com/xpraproxy/xpraproxy/relay"
)

// connState is what the front door knows of one QUIC connection, carried
// in its context from the first Initial on.
type connState struct {
	src     string
	conn    atomic.Pointer[quic.Conn]
	session atomic.Bool // a session stream was handed to the relay
	once    sync.Once   // the pending slot is given back once
}

type stateKey struct{}

func stateOf(ctx context.Context) *connState {
	cs, _ := ctx.Value(stateKey{}).(*connState)
	return cs
}

// errRefused makes quic-go refuse a connection attempt (CONNECTION_REFUSED).
var errRefused = errors.New("quic: too many connections without a session")

// admit is the transport's ConnContext: a connection attempt counts as
// pending (no session yet) for its address and in all, and is refused
// beyond the caps. The slot is given back when the connection opens its
// session (the relay's own caps take over) or ends.
func (s *Server) admit(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	src := relay.SourceOf(info.RemoteAddr)
	s.mu.Lock()
	if s.closed || s.pending.Load() >= int64(s.opts.MaxPending) || s.perSource[src] >= s.opts.MaxPerSource {
		s.mu.Unlock()
		s.Refused.Add(1)
		return ctx, errRefused
	}
	s.perSource[src]++
	s.pending.Add(1)
	s.mu.Unlock()
	cs := &connState{src: src}
	context.AfterFunc(ctx, func() { s.release(cs) })
	return context.WithValue(ctx, stateKey{}, cs), nil
}

// release gives a connection's pending slot back (any goroutine, once).
func (s *Server) release(cs *connState) {
	cs.once.Do(func() {
		s.mu.Lock()
		if s.perSource[cs.src]--; s.perSource[cs.src] <= 0 {
			delete(s.perSource, cs.src)
		}
		s.mu.Unlock()
		s.pending.Add(-1)
	})
}

// needRetry is the transport's VerifySourceAddress: once more than
// RetryAbove connections wait without a session, a new one must echo a
// Retry token first, so a spoofed source gets one small packet and no
// handshake state.
func (s *Server) needRetry(net.Addr) bool {
	if s.opts.RetryAbove < 0 || s.pending.Load() >= int64(s.opts.RetryAbove) {
		s.Retried.Add(1)
		return true
	}
	return false
}

// Pending is the number of connections without a session (any goroutine).
func (s *Server) Pending() int { return int(s.pending.Load()) }
