package loop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/relay"
)

// The stream seam: a client connection that is not a socket the loops can
// poll — an SSH channel, a QUIC stream: a Go reader and writer whose
// library runs goroutines of its own — reaches the same relay as an
// accepted socket. Its session lives on a loop like any other; what
// crosses between the library's goroutines and the loop is bounded:
//
//   - reads: one goroutine blocks in Stream.Read, on a small buffer of its
//     own while the stream is idle (a big pooled one while data flows),
//     and posts what it read to the loop, which appends it to the bytes
//     the session Peeks. It stops reading while streamWindow bytes wait
//     for the session, so the stream's own flow control (SSH's window,
//     QUIC's) slows the sender: real back-pressure, not a disconnect.
//   - writes: the loop queues; a writer goroutine, started when there is
//     something to write and gone when the queue is empty, calls
//     Stream.Write. OutboundBuffered is the queue, so the relay's own
//     limits (pausing, --max-session-buffer) apply unchanged.
//
// A root proxy hands a stream's session to a worker through a splice
// (splice.go): the transport stays in the process that holds its keys.

// Stream is a client connection for ServeStream. Read and Write may
// block; Close must make a blocked Read return. A Stream that also has
// CloseWrite() error (ssh.Channel) is half-closed with it when the relay
// has sent its last bytes.
type Stream interface {
	io.ReadWriteCloser
}

// StreamOptions say how a stream's client speaks.
type StreamOptions struct {
	// Remote is the client's address: the connection caps, the login
	// throttle and the logs count it.
	Remote net.Addr
	// Config is the sessions' configuration (a listener's, or one made
	// for the transport).
	Config *relay.Config
	// WebSocket: the stream carries RFC 6455 frames (xpra's quic://, its
	// upgrade done by the transport), with RequireMask the client must
	// mask them.
	WebSocket, RequireMask bool
	// Transport names the stream's transport in the access log ("ssh",
	// "quic"); "" is "stream".
	Transport string
	// Login, when set, is the login the transport did (SSH): the
	// session asks no challenge (relay.TransportLogin).
	Login *relay.TransportLogin
}

const (
	streamWindow = 1 << 20  // bytes read from a stream that may wait for its session
	streamSmall  = 512      // an idle stream's read buffer
	streamBig    = 64 << 10 // a busy stream's, pooled
)

var streamBuffers = sync.Pool{New: func() any { b := make([]byte, streamBig); return &b }}

// streamConn is a Stream as the relay sees it (relay.Conn). Fields under
// "loop" are its loop's alone; the others are shared under mu.
type streamConn struct {
	srv    *Server
	el     gnet.EventLoop
	st     Stream
	remote net.Addr
	cn     *conn
	t      *ticket
	// transport is StreamOptions.Transport.
	transport string

	// loop
	in      []byte // delivered, not consumed
	off     int
	closing bool // Close was called
	gone    bool // the end was reported (OnClose's counterpart)

	mu       sync.Mutex
	room     sync.Cond // the reader waits here for the window
	window   int       // bytes read and not yet consumed by the session
	out      []byte    // queued for the writer
	writing  bool      // a writer goroutine runs
	closeReq bool      // close once out is written
	halfReq  bool      // CloseWrite once out is written
	stopped  bool      // the reader must stop
	queued   atomic.Int64
}

// ServeStream relays an xpra client that arrives as a stream: the
// connection caps apply as to an accepted socket (a refusal is written on
// the stream as xpra's plain-text line and the stream closed), then its
// session runs on a loop. It returns at once; the stream is the server's
// from then on, whatever the result. Safe from any goroutine but a loop.
func (s *Server) ServeStream(st Stream, o StreamOptions) error {
	select {
	case <-s.up:
	default:
		st.Close()
		return errors.New("loop: server not running")
	}
	if o.Config == nil || o.Remote == nil {
		st.Close()
		return errors.New("loop: a stream needs a config and its client's address")
	}
	t, refusal := s.admit(relay.SourceOf(o.Remote))
	if t == nil {
		s.refusals.Add(1)
		go func() {
			st.Write([]byte("disconnect: " + refusal + "\n"))
			st.Close()
		}()
		return errors.New("loop: " + refusal)
	}
	return s.serveStream(st, o, t)
}

// serveStream serves a stream that holds ticket t (its place in the
// caps: ServeStream's, or the SSH connection's it came from).
func (s *Server) serveStream(st Stream, o StreamOptions, t *ticket) error {
	ls := s.pickLoop()
	if ls == nil {
		t.closed()
		st.Close()
		return errors.New("loop: no event loop")
	}
	sc := &streamConn{srv: s, el: ls.el, st: st, remote: o.Remote, t: t, transport: o.Transport}
	sc.room.L = &sc.mu
	err := ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		sc.start(ls, o)
		return nil
	}))
	if err != nil {
		t.closed()
		st.Close()
		return fmt.Errorf("loop: %w", err)
	}
	return nil
}

// pickLoop chooses a loop for a stream, in turn.
func (s *Server) pickLoop() *loopState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.loopOrder) == 0 {
		return nil
	}
	s.nextLoop++
	return s.loopOrder[s.nextLoop%len(s.loopOrder)]
}

// start makes the stream's session (loop) and begins reading.
func (sc *streamConn) start(ls *loopState, o StreamOptions) {
	sc.cn = &conn{role: roleClient, ls: ls, t: sc.t}
	var rc relay.Conn = sc
	if o.WebSocket {
		w := newWSConn(sc, int64(o.Config.MaxPacketSize)+1<<20)
		w.requireMask = o.RequireMask || sc.srv.opts.WSRequireMask
		rc = w
	}
	sc.srv.startSession(sc.el, sc.cn, o.Config, rc, time.Now())
	if o.Login != nil {
		sc.cn.sess.SetTransportLogin(*o.Login)
	}
	if !sc.t.bind(sc.cn, nil) {
		sc.srv.evicted(sc.cn, nil)
	}
	go sc.readLoop()
}

// readLoop reads the stream until it ends or the connection closes.
func (sc *streamConn) readLoop() {
	small := make([]byte, streamSmall)
	big := false
	for {
		sc.mu.Lock()
		for sc.window >= streamWindow && !sc.stopped {
			sc.room.Wait()
		}
		stopped := sc.stopped
		sc.mu.Unlock()
		if stopped {
			return
		}
		buf, pooled := small, (*[]byte)(nil)
		if big {
			pooled = streamBuffers.Get().(*[]byte)
			buf = *pooled
		}
		n, err := sc.st.Read(buf)
		// A read that fills the small buffer means data flows: the
		// next one takes a big buffer, and a short read goes back.
		big = n == len(buf)
		if n > 0 {
			sc.mu.Lock()
			sc.window += n
			sc.mu.Unlock()
			chunk := buf[:n]
			if pooled == nil {
				chunk = append([]byte(nil), chunk...) // small is reused at once
			}
			sc.post(func() { sc.deliver(chunk, pooled) })
		} else if pooled != nil {
			streamBuffers.Put(pooled)
		}
		if err != nil {
			sc.post(func() { sc.ended(err) })
			return
		}
	}
}

func (sc *streamConn) post(fn func()) {
	_ = sc.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		fn()
		return nil
	}))
}

// deliver hands read bytes to the session (loop).
func (sc *streamConn) deliver(chunk []byte, pooled *[]byte) {
	if sc.gone {
		sc.consumed(len(chunk))
	} else {
		sc.in = append(sc.in, chunk...)
	}
	if pooled != nil {
		streamBuffers.Put(pooled)
	}
	if !sc.gone {
		sc.srv.streamTraffic(sc)
	}
}

// streamTraffic is OnTraffic for a stream's connection (loop).
func (s *Server) streamTraffic(sc *streamConn) {
	cn := sc.cn
	cn.t.progress(stageBytes)
	switch cn.role {
	case roleClient:
		now := time.Now()
		if cn.ws != nil {
			if s.wsTraffic(cn, now) == gnet.Close {
				sc.Close()
			}
			return
		}
		cn.sess.ClientTraffic(now)
	case roleSplice:
		cn.sp.toWorker()
	default:
		sc.Discard(sc.InboundBuffered())
	}
}

// ended is OnClose for a stream's connection (loop): once.
func (sc *streamConn) ended(err error) {
	if sc.gone {
		return
	}
	sc.gone = true
	sc.stopReading()
	sc.Discard(sc.InboundBuffered())
	if errors.Is(err, io.EOF) {
		err = nil
	}
	cn := sc.cn
	switch cn.role {
	case roleClient:
		sc.t.closed()
		cn.sess.OnClientClosed(err)
		sc.srv.dropSession(cn)
	case roleSplice:
		cn.sp.closed(cn)
	}
	sc.Close()
}

func (sc *streamConn) stopReading() {
	sc.mu.Lock()
	sc.stopped = true
	sc.mu.Unlock()
	sc.room.Broadcast()
}

// consumed gives the reader room again.
func (sc *streamConn) consumed(n int) {
	sc.mu.Lock()
	sc.window -= n
	sc.mu.Unlock()
	sc.room.Signal()
}

// The relay's view (relay.Conn), loop only.

func (sc *streamConn) InboundBuffered() int { return len(sc.in) - sc.off }

func (sc *streamConn) Peek(n int) ([]byte, error) {
	if n <= 0 {
		n = sc.InboundBuffered()
	}
	if n > sc.InboundBuffered() {
		return nil, io.ErrShortBuffer
	}
	return sc.in[sc.off : sc.off+n], nil
}

func (sc *streamConn) Discard(n int) (int, error) {
	if n <= 0 || n > sc.InboundBuffered() {
		n = sc.InboundBuffered()
	}
	sc.off += n
	if sc.off == len(sc.in) {
		// Drained: an idle stream holds no buffer.
		sc.in, sc.off = nil, 0
	} else if sc.off > len(sc.in)/2 {
		sc.in, sc.off = sc.in[:copy(sc.in, sc.in[sc.off:])], 0
	}
	if n > 0 {
		sc.consumed(n)
	}
	return n, nil
}

func (sc *streamConn) OutboundBuffered() int { return int(sc.queued.Load()) }

func (sc *streamConn) Write(p []byte) (int, error) {
	return sc.Writev([][]byte{p})
}

func (sc *streamConn) Writev(bs [][]byte) (int, error) {
	if sc.closing {
		return 0, net.ErrClosed
	}
	n := 0
	sc.mu.Lock()
	for _, b := range bs {
		sc.out = append(sc.out, b...)
		n += len(b)
	}
	start := !sc.writing && n > 0
	sc.writing = sc.writing || start
	sc.mu.Unlock()
	sc.queued.Add(int64(n))
	if start {
		go sc.writeLoop()
	}
	return n, nil
}

// writeLoop writes what is queued, then ends (an idle stream runs no
// writer); a requested close or half-close follows the last byte.
func (sc *streamConn) writeLoop() {
	for {
		sc.mu.Lock()
		b := sc.out
		sc.out = nil
		if len(b) == 0 {
			sc.writing = false
			closeReq, halfReq := sc.closeReq, sc.halfReq
			sc.halfReq = false
			sc.mu.Unlock()
			switch {
			case closeReq:
				sc.st.Close()
			case halfReq:
				if cw, ok := sc.st.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
			}
			return
		}
		sc.mu.Unlock()
		_, err := sc.st.Write(b)
		sc.queued.Add(-int64(len(b)))
		if err != nil {
			sc.mu.Lock()
			dropped := len(sc.out)
			sc.out, sc.closeReq = nil, true
			sc.mu.Unlock()
			sc.queued.Add(-int64(dropped))
			sc.post(func() { sc.ended(err) })
		}
	}
}

// CloseWrite half-closes once the queue is out (relay's shutdownWrite).
func (sc *streamConn) CloseWrite() error {
	sc.afterQueue(func() { sc.halfReq = true })
	return nil
}

// Close closes the stream once what is queued is written; the session's
// end follows (loop).
func (sc *streamConn) Close() error {
	if sc.closing {
		return nil
	}
	sc.closing = true
	sc.afterQueue(func() { sc.closeReq = true })
	if !sc.gone {
		sc.post(func() { sc.ended(nil) })
	}
	return nil
}

// afterQueue records a request (under mu) that the writer carries out
// once the queue is written, starting the writer if none runs.
func (sc *streamConn) afterQueue(request func()) {
	sc.mu.Lock()
	request()
	start := !sc.writing
	sc.writing = true
	sc.mu.Unlock()
	if start {
		go sc.writeLoop()
	}
}

func (sc *streamConn) RemoteAddr() net.Addr { return sc.remote }

// Fd is -1: a stream has no descriptor of its own (a handoff splices it).
func (sc *streamConn) Fd() int { return -1 }

// HandoffLink is relay.Transported: the transport stays in this process
// (a splice carries the plaintext to a worker).
func (sc *streamConn) HandoffLink() (relay.Link, error) { return relay.Link{}, nil }

// Transport is relay.Transporter: the access log's name for the stream.
func (sc *streamConn) Transport() string {
	if sc.transport == "" {
		return "stream"
	}
	return sc.transport
}

var _ relay.Conn = (*streamConn)(nil)
