package loop

import (
	"bufio"
	"bytes"
	"fmt"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// HTTP on the proxy's port: the HTML5 client's files from the shared
// file cache (files.go), and the WebSocket upgrade (upgrade.go).

// maxRequestHeader bounds an HTTP request's head; longer is refused (431).
const maxRequestHeader = 8 << 10

// httpState is an HTTP connection's, between or inside requests.
//
// At most one response is in flight: while body is unsent no request is
// read, and a client that pipelines more than maxRequestHeader bytes of
// requests meanwhile is closed. body points into the server's file cache,
// shared by every connection, so a connection holds no copy of a file;
// what it holds is at most one sendChunk in gnet's outbound buffer.
type httpState struct {
	deadline   time.Time
	body       []byte // the response's rest, not yet written
	closeAfter bool   // close once body is sent
}

// serveHTTP answers one request: a WebSocket upgrade becomes an xpra
// session, a GET a file of the HTML5 client.
func (s *Server) serveHTTP(c gnet.Conn, cn *conn, now time.Time) gnet.Action {
	sc, ls := cn.pre.http, cn.ls
	n := c.InboundBuffered()
	if len(sc.body) > 0 || c.OutboundBuffered() > 0 {
		// A response is still being written: the next request waits,
		// and a client that keeps sending without reading is cut off.
		if n > maxRequestHeader {
			c.Discard(n)
			delete(ls.sending, c)
			return gnet.Close
		}
		ls.sending[c] = cn
		return gnet.None
	}
	b, _ := c.Peek(min(n, maxRequestHeader+4))
	req, used, refusal := readRequest(b, n)
	if req == nil && refusal == nil {
		ls.pending[c] = cn // the sweep ends requests that never finish
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
		return s.upgrade(c, cn, req, now)
	}
	closeAfter := req.Close || req.ProtoMajor == 1 && req.ProtoMinor == 0
	head, body := s.fileResponse(cn.pre.l, req, closeAfter)
	c.Write(head)
	sc.body, sc.closeAfter = body, closeAfter
	sc.deadline = now.Add(s.opts.HTTPTimeout)
	delete(ls.pending, c)
	return s.sendMore(c, cn, now)
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
func (s *Server) sendMore(c gnet.Conn, cn *conn, now time.Time) gnet.Action {
	sc, ls := cn.pre.http, cn.ls
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
		ls.sending[c] = cn
		return gnet.None
	}
	delete(ls.sending, c)
	if sc.closeAfter {
		c.Close()
		return gnet.Close
	}
	sc.deadline = now.Add(s.opts.HTTPTimeout)
	ls.pending[c] = cn
	if c.InboundBuffered() > 0 {
		return s.serveHTTP(c, cn, now)
	}
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
	data, ctype, err := s.File(l.HTML, req.URL.Path)
	if err != nil {
		return httpResponse(404, "Not Found", "not found\n", closeAfter), nil
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

// File returns the file of the HTML5 client that an HTTP request's path
// names under dir (a directory's index.html), from the file cache shared
// by every connection and transport (HTTP/3 too), with its content type.
// The data must not be modified. Safe from any goroutine.
func (s *Server) File(dir, urlPath string) (data []byte, ctype string, err error) {
	p := path.Clean("/" + urlPath)
	if strings.HasSuffix(p, "/") {
		p += "index.html"
	}
	full := filepath.Join(dir, filepath.FromSlash(p))
	if fi, err := os.Stat(full); err == nil && fi.IsDir() {
		full = filepath.Join(full, "index.html")
	}
	data, err = s.files.get(full)
	if err != nil {
		return nil, "", err
	}
	ctype = mime.TypeByExtension(filepath.Ext(full))
	if ctype == "" {
		ctype = http.DetectContentType(data)
	}
	return data, ctype, nil
}

func httpResponse(code int, status, body string, closeAfter bool) []byte {
	conn := ""
	if closeAfter {
		conn = "Connection: close\r\n"
	}
	return []byte(fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n%s",
		code, status, len(body), conn, body))
}
