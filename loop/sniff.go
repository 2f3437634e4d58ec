package loop

import (
	"bytes"
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
	toSSH                        // an SSH identification string on a port that serves SSH
)

// classify decides from a connection's first bytes (at least one, at most
// 8 are looked at) what it speaks; m is what its port allows.
func classify(b []byte, m mode, haveTLS, haveSSH bool) verdict {
	switch {
	case len(b) == 0:
		return needMore
	case haveSSH && m == modeAny && looksSSH(b):
		if len(b) < len(sshBanner) {
			return needMore // "SS": wait for the rest of "SSH-"
		}
		return toSSH
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

// sniff looks at a sniffing client's first bytes. handled says whether
// it was diverted (HTTP, TLS, refused); otherwise it is xpra, its session
// goes on and the connection is a client from now on.
func (s *Server) sniff(c gnet.Conn, cn *conn, now time.Time) (gnet.Action, bool) {
	n := c.InboundBuffered()
	if n == 0 {
		return gnet.None, true
	}
	p := cn.pre
	b, _ := c.Peek(min(n, 8))
	switch classify(b, p.mode, p.l.TLS != nil, p.l.SSH != nil) {
	case needMore:
		return gnet.None, true
	case toSSH:
		s.forget(cn)
		return s.toSSH(c, cn), true
	case toTLS:
		// Root proxies too: the record layer stays on this loop, and a
		// worker later gets the plaintext through a splice (splice.go).
		s.forget(cn)
		return s.startLoopTLS(c, cn), true
	case refusePlain:
		// xpra's ssl/wss sockets refuse plaintext.
		c.Write([]byte("disconnect: this port only accepts TLS (ssl:// or wss://)\n"))
		return gnet.Close, true
	case toHTTP:
		s.forget(cn)
		cn.role, p.http = roleHTTP, &httpState{deadline: now.Add(s.opts.HTTPTimeout)}
		return s.serveHTTP(c, cn, now), true
	case refuseNotHTTP:
		c.Write(httpResponse(400, "Bad Request", "this port expects HTTP (a WebSocket upgrade)\n", true))
		return gnet.Close, true
	}
	cn.role, cn.pre = roleClient, nil
	return gnet.None, false
}

// configFor is the sessions' config: TLS links count as encrypted (xor
// digests allowed, as xpra).
func (l *Listener) configFor(m mode) *relay.Config {
	if m.inner() && l.tlsConfig != nil {
		return l.tlsConfig
	}
	return l.Config
}
