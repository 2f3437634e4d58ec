package quicfront

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/webtransport-go"

	"github.com/xpraproxy/xpraproxy/loop"
)

// WebTransport (wt://, the HTML5 client's js/WebTransport.js; xpra 6's
// quic/webtransport.py): an extended CONNECT with :protocol webtransport
// opens a session; the client then opens one bidirectional stream and
// speaks raw xpra packets on it (no WebSocket framing). webtransport-go
// serves the session on the same http3.Server (it also serves the
// connection's other requests: Server.serveConn gives it the connection).

// webTransport accepts the session and hands its first bidirectional
// stream to the relay.
func (s *Server) webTransport(w http.ResponseWriter, r *http.Request) {
	cs := stateOf(r.Context())
	c := cs.conn.Load()
	if !cs.session.CompareAndSwap(false, true) {
		plain(w, http.StatusConflict, "this connection already has its session")
		return
	}
	sess, err := s.wt.Upgrade(w, r)
	if err != nil {
		// Nothing was answered: refuse, and let the connection's login
		// deadline end it.
		cs.session.Store(false)
		plain(w, http.StatusBadRequest, "webtransport: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.LoginTimeout)
	defer cancel()
	str, err := sess.AcceptStream(ctx)
	if err != nil {
		s.TimedOut.Add(1)
		sess.CloseWithError(0, "no stream opened in time")
		c.CloseWithError(0, "no stream opened in time")
		return
	}
	s.release(cs)
	s.Sessions.Add(1)
	err = s.opts.Streams.ServeStream(&wtStream{Stream: str, sess: sess}, loop.StreamOptions{
		Remote: c.RemoteAddr(), Config: s.opts.Config, Transport: "wt",
	})
	if err != nil {
		s.log.Info("webtransport session refused", "remote", c.RemoteAddr().String(), "err", err)
	}
}

// wtStream is a WebTransport session's stream as loop.Stream: Close ends
// the stream both ways and, once the client had time to read the last
// bytes, the session and its connection.
type wtStream struct {
	*webtransport.Stream
	sess *webtransport.Session
	once sync.Once
}

func (st *wtStream) CloseWrite() error { return st.Stream.Close() }

func (st *wtStream) Close() error {
	st.once.Do(func() {
		st.Stream.Close()
		st.Stream.CancelRead(0)
		sess := st.sess
		t := time.AfterFunc(closeGrace, func() { sess.CloseWithError(0, "session ended") })
		context.AfterFunc(sess.Context(), func() { t.Stop() })
	})
	return nil
}
