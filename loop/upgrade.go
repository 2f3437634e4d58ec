package loop

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// upgrade checks and answers a WebSocket handshake as xpra's
// handle_websocket does, then relays xpra over binary frames: the HTTP
// connection becomes a client with a session.
func (s *Server) upgrade(c gnet.Conn, cn *conn, req *http.Request, now time.Time) gnet.Action {
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
	cfg := cn.pre.l.configFor(cn.pre.mode)
	w := newWSConn(c, int64(cfg.MaxPacketSize)+1<<20)
	// Browsers always mask (and always send Origin); xpra's python
	// clients never mask and send no Origin (spec §3.3). The policy
	// travels with a handoff (wsConn.HandoffLink).
	w.requireMask = s.opts.WSRequireMask || req.Header.Get("Origin") != ""
	cn.role, cn.pre = roleClient, nil
	s.startSession(c.EventLoop(), cn, cfg, w, now)
	return s.wsTraffic(cn, now)
}

// wsTraffic decodes frames, then lets the session read the stream; bad
// framing ends the connection with a reason.
func (s *Server) wsTraffic(cn *conn, now time.Time) gnet.Action {
	w := cn.ws
	if w.broken {
		w.Conn.Discard(w.Conn.InboundBuffered())
		return gnet.None
	}
	if err := w.decode(); err != nil {
		if errors.Is(err, errWSClosed) {
			return gnet.Close
		}
		w.broken = true
		w.Conn.Discard(w.Conn.InboundBuffered())
		cn.sess.Reject("protocol error", strings.TrimPrefix(err.Error(), "loop: "))
		return gnet.None
	}
	cn.sess.ClientTraffic(now)
	return gnet.None
}
