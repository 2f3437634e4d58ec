package loop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/relay"
)

// One port for everything (spec §3.1): a connection's first bytes say
// what it speaks. 'P' is xpra; an HTTP request line is a WebSocket upgrade
// (or a file of the HTML5 client); 0x16 is a TLS ClientHello, after which
// the same sniffing runs on the decrypted stream.

// mode is what a connection may speak at this point.
type mode uint8

const (
	modeAny       mode = iota // xpra, HTTP or TLS (tcp listeners)
	modeHTTP                  // HTTP or TLS (ws listeners)
	modeTLSAny                // TLS, then xpra or HTTP (ssl listeners)
	modeTLSHTTP               // TLS, then HTTP (wss listeners)
	modeInnerAny              // decrypted: xpra or HTTP
	modeInnerHTTP             // decrypted: HTTP
)

func (m mode) tlsOnly() bool { return m == modeTLSAny || m == modeTLSHTTP }
func (m mode) inner() bool   { return m == modeInnerAny || m == modeInnerHTTP }
func (m mode) xpra() bool    { return m == modeAny || m == modeInnerAny }

// maxRequestHeader bounds an HTTP request's head; longer is refused (431).
const maxRequestHeader = 8 << 10

// sniffCtx is an HTTP connection (between or inside requests).
//
// At most one response is in flight: while body is unsent no request is
// read, and a client that pipelines more than maxRequestHeader bytes of
// requests meanwhile is closed. body points into the server's file cache,
// shared by every connection, so a connection holds no copy of a file;
// what it holds is at most one sendChunk in gnet's outbound buffer.
type sniffCtx struct {
	l          *Listener
	mode       mode
	peer       net.Addr // the TCP peer, for decrypted connections
	deadline   time.Time
	t          *ticket
	body       []byte // the response's rest, not yet written
	closeAfter bool   // close once body is sent
	tls        *tlsConn
}

// sniffInfo rides on a new xpra-looking session until its first bytes
// confirm it: the session is made at accept so that a silent client gets
// xpra's login timeout.
type sniffInfo struct {
	l    *Listener
	mode mode
	peer net.Addr
}

// tlsCtx marks the decrypted end of a TLS bridge joining a loop.
type tlsCtx struct {
	l    *Listener
	mode mode
	peer net.Addr
	t    *ticket
}

func looksHTTP(b []byte) bool {
	for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "OPTIONS ", "DELETE "} {
		n := min(len(b), len(m))
		if string(b[:n]) == m[:n] {
			return true
		}
	}
	return false
}

// verdict is what a connection's first bytes make of it.
type verdict uint8

const (
	needMore      verdict = iota // too few bytes to tell
	toTLS                        // a ClientHello on a port with a certificate
	refusePlain                  // plaintext on a TLS-only port
	toHTTP                       // an HTTP request (WebSocket upgrade or a file)
	refuseNotHTTP                // not HTTP on an HTTP-only port
	toXpra                       // xpra, or garbage for the xpra parser to refuse
)

// classify decides from a connection's first bytes (at least one, at most
// 8 are looked at) what it speaks; m is what its port allows.
func classify(b []byte, m mode, haveTLS bool) verdict {
	switch {
	case len(b) == 0:
		return needMore
	case b[0] == 0x16 && !m.inner() && haveTLS:
		return toTLS
	case m.tlsOnly():
		return refusePlain
	case b[0] == 0x16 && !m.inner():
		// TLS without a certificate: the session's own answer ("SSL
		// packet?").
		return toXpra
	case looksHTTP(b):
		if len(b) < 8 && !bytes.Contains(b, []byte(" ")) {
			return needMore // "GE": wait for the method
		}
		return toHTTP
	case !m.xpra():
		return refuseNotHTTP
	}
	return toXpra
}

// sniff looks at a new connection's first bytes. handled says whether it
// was diverted (HTTP, TLS, refused); otherwise it is xpra and its session
// goes on.
func (s *Server) sniff(c gnet.Conn, ctx *clientCtx, now time.Time) (gnet.Action, bool) {
	n := c.InboundBuffered()
	if n == 0 {
		return gnet.None, true
	}
	si := ctx.sniff
	b, _ := c.Peek(min(n, 8))
	switch classify(b, si.mode, si.l.TLS != nil) {
	case needMore:
		return gnet.None, true
	case toTLS:
		s.forget(ctx)
		if si.l.Config.HandOff != nil {
			// A root proxy hands sessions to workers as sockets: the
			// plaintext must be one (the bridge's socketpair).
			s.startTLS(c, si, ctx.t)
			return gnet.None, true
		}
		return s.startLoopTLS(c, si, ctx.t), true
	case refusePlain:
		// xpra's ssl/wss sockets refuse plaintext.
		c.Write([]byte("disconnect: this port only accepts TLS (ssl:// or wss://)\n"))
		return gnet.Close, true
	case toHTTP:
		s.forget(ctx)
		sc := &sniffCtx{l: si.l, mode: si.mode, peer: si.peer, deadline: now.Add(s.opts.HTTPTimeout), t: ctx.t, tls: ctx.tls}
		c.SetContext(sc)
		return s.serveHTTP(c, sc, ctx.ls, now), true
	case refuseNotHTTP:
		c.Write(httpResponse(400, "Bad Request", "this port expects HTTP (a WebSocket upgrade)\n", true))
		return gnet.Close, true
	}
	ctx.sniff = nil
	return gnet.None, false
}

// forget drops the session made at accept for a connection that turned
// out not to speak xpra.
func (s *Server) forget(ctx *clientCtx) {
	if _, ok := ctx.ls.sessions[ctx.s]; ok {
		delete(ctx.ls.sessions, ctx.s)
		delete(ctx.ls.urgent, ctx.s)
		s.count.Add(-1)
	}
	ctx.s.Forget()
}

// configFor is the sessions' config: TLS links count as encrypted (xor
// digests allowed, as xpra).
func (l *Listener) configFor(m mode) *relay.Config {
	if m.inner() && l.tlsConfig != nil {
		return l.tlsConfig
	}
	return l.Config
}

// startSession makes the relay session of a connection that speaks xpra
// (conn is c, or the WebSocket framing over it).
func (s *Server) startSession(c gnet.Conn, ls *loopState, cfg *relay.Config, conn relay.Conn, t *ticket, now time.Time) *clientCtx {
	h := &host{srv: s, el: c.EventLoop(), ls: ls, t: t}
	sess := relay.NewSession(s.nextID.Add(1), cfg, h, conn, now)
	ls.sessions[sess] = struct{}{}
	ctx := &clientCtx{s: sess, ls: ls, t: t}
	if w, ok := conn.(*wsConn); ok {
		ctx.ws = w
	}
	if tl, ok := c.(*tlsConn); ok {
		ctx.tls = tl
	}
	c.SetContext(ctx)
	s.count.Add(1)
	return ctx
}

// peerConn reports the real peer of a decrypted connection.
type peerConn struct {
	gnet.Conn
	peer net.Addr
}

func (p peerConn) RemoteAddr() net.Addr { return p.peer }

// serveHTTP answers one request: a WebSocket upgrade becomes an xpra
// session, a GET a file of the HTML5 client.
func (s *Server) serveHTTP(c gnet.Conn, sc *sniffCtx, ls *loopState, now time.Time) gnet.Action {
	n := c.InboundBuffered()
	if len(sc.body) > 0 || c.OutboundBuffered() > 0 {
		// A response is still being written: the next request waits,
		// and a client that keeps sending without reading is cut off.
		if n > maxRequestHeader {
			c.Discard(n)
			delete(ls.sending, c)
			return gnet.Close
		}
		ls.sending[c] = sc
		return gnet.None
	}
	b, _ := c.Peek(min(n, maxRequestHeader+4))
	req, used, refusal := readRequest(b, n)
	if req == nil && refusal == nil {
		ls.pending[c] = sc // the sweep ends requests that never finish
		return gnet.None
	}
	c.Discard(used)
	if refusal != nil {
		delete(ls.pending, c)
		c.Write(refusal)
		return gnet.Close
	}
	if strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		delete(ls.pending, c)
		return s.upgrade(c, sc, ls, req, now)
	}
	closeAfter := req.Close || req.ProtoMajor == 1 && req.ProtoMinor == 0
	head, body := s.fileResponse(sc.l, req, closeAfter)
	c.Write(head)
	sc.body, sc.closeAfter = body, closeAfter
	sc.deadline = now.Add(s.opts.HTTPTimeout)
	delete(ls.pending, c)
	return s.sendMore(c, sc, ls, now)
}

// readRequest parses the request head at the start of b, of n buffered
// bytes. It returns the request and the bytes it used; or, for a request
// that is refused, the response to send before closing; or neither while
// the head is incomplete. Bodies are never accepted (the HTML5 client
// sends none).
func readRequest(b []byte, n int) (req *http.Request, used int, refusal []byte) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 || end+4 > maxRequestHeader {
		if n > maxRequestHeader || end >= 0 {
			return nil, len(b), httpResponse(431, "Request Header Fields Too Large", "request header too large\n", true)
		}
		return nil, 0, nil
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:end+4])))
	if err != nil {
		return nil, end + 4, httpResponse(400, "Bad Request", "malformed HTTP request\n", true)
	}
	if req.ContentLength != 0 || req.TransferEncoding != nil {
		return nil, end + 4, httpResponse(413, "Payload Too Large", "request bodies are not accepted\n", true)
	}
	return req, end + 4, nil
}

// sendChunk is how much of a response is written at a time, and
// sendBurst how much at most per loop visit while the socket takes it.
const (
	sendChunk = 64 << 10
	sendBurst = 1 << 20
)

// sendMore writes the response's rest while the socket takes it (gnet's
// outbound buffer empty), then goes on with the next request; called at
// each request and at every tick while a response is unsent.
func (s *Server) sendMore(c gnet.Conn, sc *sniffCtx, ls *loopState, now time.Time) gnet.Action {
	for sent := 0; len(sc.body) > 0 && c.OutboundBuffered() == 0 && sent < sendBurst; {
		n := min(len(sc.body), sendChunk)
		if _, err := c.Write(sc.body[:n]); err != nil {
			sc.body = nil
			delete(ls.sending, c)
			c.Close()
			return gnet.Close
		}
		sc.body = sc.body[n:]
		sent += n
	}
	if len(sc.body) > 0 || c.OutboundBuffered() > 0 {
		if now.After(sc.deadline.Add(time.Minute)) {
			// A client that reads nothing for a minute.
			sc.body = nil
			delete(ls.sending, c)
			c.Close()
			return gnet.Close
		}
		ls.sending[c] = sc
		return gnet.None
	}
	delete(ls.sending, c)
	if sc.closeAfter {
		c.Close()
		return gnet.Close
	}
	sc.deadline = now.Add(s.opts.HTTPTimeout)
	ls.pending[c] = sc
	if c.InboundBuffered() > 0 {
		return s.serveHTTP(c, sc, ls, now)
	}
	return gnet.None
}

// upgrade checks and answers a WebSocket handshake as xpra's
// handle_websocket does, then relays xpra over binary frames.
func (s *Server) upgrade(c gnet.Conn, sc *sniffCtx, ls *loopState, req *http.Request, now time.Time) gnet.Action {
	key := req.Header.Get("Sec-Websocket-Key")
	version := req.Header.Get("Sec-Websocket-Version")
	binary := false
	for _, p := range strings.Split(req.Header.Get("Sec-Websocket-Protocol"), ",") {
		if strings.TrimSpace(p) == "binary" {
			binary = true
		}
	}
	switch {
	case req.Method != http.MethodGet, key == "", version != "13" && version != "8" && version != "7", !binary:
		c.Write(httpResponse(403, "Forbidden", "websocket upgrade refused: GET, Sec-WebSocket-Key, version 13 and the binary protocol are required\n", true))
		return gnet.Close
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	// Exactly what xpra 3.1 writes; nothing may follow before the
	// client's first frame.
	c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n" +
		"Sec-WebSocket-Protocol: binary\r\n\r\n"))
	cfg := sc.l.configFor(sc.mode)
	w := newWSConn(c, sc.peer, int64(cfg.MaxPacketSize)+1<<20)
	// Browsers always mask (and always send Origin); xpra's python
	// clients never mask and send no Origin (spec §3.3).
	w.requireMask = s.opts.WSRequireMask || req.Header.Get("Origin") != ""
	return s.wsTraffic(s.startSession(c, ls, cfg, w, sc.t, now), now)
}

// wsTraffic decodes frames, then lets the session read the stream; bad
// framing ends the connection with a reason.
func (s *Server) wsTraffic(ctx *clientCtx, now time.Time) gnet.Action {
	if ctx.ws.broken {
		ctx.ws.Conn.Discard(ctx.ws.Conn.InboundBuffered())
		return gnet.None
	}
	if err := ctx.ws.decode(); err != nil {
		if errors.Is(err, errWSClosed) {
			return gnet.Close
		}
		ctx.ws.broken = true
		ctx.ws.Conn.Discard(ctx.ws.Conn.InboundBuffered())
		ctx.s.Reject("protocol error", strings.TrimPrefix(err.Error(), "loop: "))
		return gnet.None
	}
	ctx.s.ClientTraffic(now)
	return gnet.None
}

// fileResponse serves the HTML5 client's files (--html=DIR): the head of
// the response, and its body from the file cache (shared, read-only).
func (s *Server) fileResponse(l *Listener, req *http.Request, closeAfter bool) (head, body []byte) {
	if l.HTML == "" {
		return httpResponse(404, "Not Found", "this proxy does not serve the HTML5 client (--html=DIR)\n", closeAfter), nil
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return httpResponse(405, "Method Not Allowed", "method not allowed\n", closeAfter), nil
	}
	p := path.Clean("/" + req.URL.Path)
	if strings.HasSuffix(p, "/") {
		p += "index.html"
	}
	full := filepath.Join(l.HTML, filepath.FromSlash(p))
	if fi, err := os.Stat(full); err == nil && fi.IsDir() {
		full = filepath.Join(full, "index.html")
	}
	data, err := s.files.get(full)
	if err != nil {
		return httpResponse(404, "Not Found", "not found\n", closeAfter), nil
	}
	ctype := mime.TypeByExtension(filepath.Ext(full))
	if ctype == "" {
		ctype = http.DetectContentType(data)
	}
	var hdr strings.Builder
	fmt.Fprintf(&hdr, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nCache-Control: no-cache\r\n", ctype, len(data))
	if closeAfter {
		hdr.WriteString("Connection: close\r\n")
	}
	hdr.WriteString("\r\n")
	if req.Method == http.MethodGet {
		body = data
	}
	return []byte(hdr.String()), body
}

func httpResponse(code int, status, body string, closeAfter bool) []byte {
	conn := ""
	if closeAfter {
		conn = "Connection: close\r\n"
	}
	return []byte(fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n%s",
		code, status, len(body), conn, body))
}

// startTLS takes the socket out of gnet and serves TLS with crypto/tls in
// two goroutines; the decrypted stream comes back to this loop through a
// socketpair and is sniffed again. Only a root proxy's TLS connections
// take this road (startLoopTLS is the other).
func (s *Server) startTLS(c gnet.Conn, sc *sniffInfo, t *ticket) {
	n := c.InboundBuffered()
	buffered, _ := c.Peek(n)
	prefix := append([]byte(nil), buffered...)
	fd, err := syscall.Dup(c.Fd())
	el := c.EventLoop()
	peer := c.RemoteAddr()
	c.SetContext(nil)
	el.Close(c)
	if err != nil {
		t.closed()
		s.log.Warn("tls: cannot take the socket", "err", err)
		return
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "tls")
	raw, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.closed()
		s.log.Warn("tls: cannot take the socket", "err", err)
		return
	}
	inner := modeInnerAny
	if sc.mode == modeHTTP || sc.mode == modeTLSHTTP {
		inner = modeInnerHTTP
	}
	go s.bridgeTLS(el, sc.l, inner, peer, &prefixConn{Conn: raw, prefix: prefix}, t)
}

// prefixConn replays bytes gnet had already read.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		if len(p.prefix) == 0 {
			p.prefix = nil // the ClientHello's bytes, not kept for the session's life
		}
		return n, nil
	}
	return p.Conn.Read(b)
}

func (s *Server) bridgeTLS(el gnet.EventLoop, l *Listener, inner mode, peer net.Addr, raw net.Conn, t *ticket) {
	tc := tls.Server(raw, l.TLS)
	// A TLS handshake needs seconds, not the login timeout: a half-open
	// handshake holds a goroutine and a socket.
	ctx, cancel := context.WithTimeout(context.Background(), min(l.Config.LoginTimeout, s.opts.HTTPTimeout))
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		t.closed()
		s.log.Debug("tls handshake failed", "peer", peer.String(), "err", err)
		raw.Close()
		return
	}
	s.tlsConns.Add(1)
	theirs, err := relay.Bridge(tc, func() { s.tlsConns.Add(-1) })
	if err != nil {
		t.closed()
		s.log.Warn("tls bridge", "err", err)
		tc.Close()
		return
	}
	ch, err := el.Enroll(gnet.NewContext(context.Background(), &tlsCtx{l: l, mode: inner, peer: peer, t: t}), theirs)
	if err == nil {
		if r := <-ch; r.Err != nil {
			err = r.Err
		}
	}
	theirs.Close() // gnet holds its own dup; on failure the bridge sees EOF and ends
	if err != nil {
		t.closed()
		s.log.Warn("tls: cannot join the loop", "err", err)
	}
}
