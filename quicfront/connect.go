package quicfront

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/xpraproxy/xpraproxy/loop"
)

// serveHTTP answers one HTTP/3 request: an extended CONNECT for a
// WebSocket (xpra's quic://) becomes a session; a GET a file of the HTML5
// client. It runs on the request stream's goroutine (http3's).
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		if (r.Proto == "webtransport" || r.Proto == "webtransport-h3") && stateOf(r.Context()) != nil && s.wt != nil {
			s.webTransport(w, r)
			return
		}
		if refusal, code := checkConnect(r); refusal != "" {
			plain(w, code, refusal)
			return
		}
		s.websocket(w, r)
		return
	}
	s.file(w, r)
}

// checkConnect says why an extended CONNECT cannot be a session, as
// xpra's quic/websocket.py does: the websocket protocol, version 13 and
// the xpra subprotocol. "" accepts it.
func checkConnect(r *http.Request) (refusal string, code int) {
	if r.Proto != "websocket" {
		return "only the websocket protocol is served here", http.StatusNotImplemented
	}
	if v := r.Header.Get("Sec-Websocket-Version"); v != "" && v != "13" {
		return "websocket version 13 is required", http.StatusBadRequest
	}
	for _, p := range strings.Split(r.Header.Get("Sec-Websocket-Protocol"), ",") {
		if strings.TrimSpace(p) == "xpra" {
			return "", 0
		}
	}
	return "the xpra websocket subprotocol is required", http.StatusBadRequest
}

// websocket accepts a checked CONNECT and hands its stream to the relay.
func (s *Server) websocket(w http.ResponseWriter, r *http.Request) {
	cs := stateOf(r.Context())
	c := (*quic.Conn)(nil)
	if cs != nil {
		c = cs.conn.Load()
	}
	if c == nil {
		plain(w, http.StatusInternalServerError, "no connection state")
		return
	}
	// One session per QUIC connection: a second CONNECT would let one
	// connection hold many sessions past the caps.
	if !cs.session.CompareAndSwap(false, true) {
		plain(w, http.StatusConflict, "this connection already has its session")
		return
	}
	streamer, ok := w.(http3.HTTPStreamer)
	if !ok {
		plain(w, http.StatusInternalServerError, "no HTTP/3 stream")
		return
	}
	w.Header().Set("Sec-Websocket-Protocol", "xpra")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	str := streamer.HTTPStream()
	s.release(cs)
	s.Sessions.Add(1)
	st := &sessionStream{Stream: str, conn: c}
	err := s.opts.Streams.ServeStream(st, loop.StreamOptions{
		Remote: c.RemoteAddr(), Config: s.opts.Config, WebSocket: true, Transport: "quic",
	})
	if err != nil {
		s.log.Info("quic session refused", "remote", c.RemoteAddr().String(), "err", err)
	}
}

// file serves a GET or HEAD from the HTML5 client's directory through
// the cache --html's HTTP shares.
func (s *Server) file(w http.ResponseWriter, r *http.Request) {
	if s.opts.HTML == "" {
		plain(w, http.StatusNotFound, "this proxy does not serve the HTML5 client (--html=DIR)")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		plain(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	data, ctype, err := s.opts.Streams.File(s.opts.HTML, r.URL.Path)
	if err != nil {
		plain(w, http.StatusNotFound, "not found")
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(data)
	}
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

// closeGrace is how long a connection whose session ended waits for its
// client to close it (having read the last bytes) before closing itself.
const closeGrace = 2 * time.Second

// sessionStream is a session's HTTP/3 stream as loop.Stream: DATA frames
// carry the WebSocket frames; Close ends the stream both ways, and the
// QUIC connection (it has no other use) once the client had time to read
// what was written.
type sessionStream struct {
	*http3.Stream
	conn *quic.Conn
	once sync.Once
}

// CloseWrite sends FIN after the last bytes (the relay's half-close).
func (st *sessionStream) CloseWrite() error { return st.Stream.Close() }

func (st *sessionStream) Close() error {
	st.once.Do(func() {
		st.Stream.Close()
		// A Read blocked in the reader goroutine returns.
		st.Stream.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
		c := st.conn
		t := time.AfterFunc(closeGrace, func() {
			c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "session ended")
		})
		context.AfterFunc(c.Context(), func() { t.Stop() })
	})
	return nil
}
