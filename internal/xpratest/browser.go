package xpratest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
)

// The wire behaviour of xpra-html5 v21, the browser client most people
// use on port 443 (it is in no package registry, so the tests speak its
// bytes): a WebSocket with an Origin header and masked frames, a
// rencodeplus hello, and a challenge_client_salt made of 32 random bytes
// turned into a string with String.fromCharCode, which its encoder sends
// as UTF-8 text. xpra reads such text back as latin-1 (strtobytes).

// wsStream is the client end of a WebSocket as a byte stream: writes are
// masked binary frames, reads return the payload of the server's frames.
// A close frame from the server ends reads with a wsutil.ClosedError.
type wsStream struct {
	net.Conn
	pending []byte
}

func (w *wsStream) Read(p []byte) (int, error) {
	for len(w.pending) == 0 {
		data, op, err := wsutil.ReadServerData(w.Conn)
		if err != nil {
			return 0, err
		}
		if op == ws.OpBinary || op == ws.OpText {
			w.pending = data
		}
	}
	n := copy(p, w.pending)
	w.pending = w.pending[n:]
	return n, nil
}

func (w *wsStream) Write(p []byte) (int, error) {
	if err := wsutil.WriteClientBinary(w.Conn, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// wsServerStream is the server end of a WebSocket as a byte stream:
// reads take the client's frames masked or not (xpra's own clients do not
// mask, and xpra's servers accept that), writes are unmasked binary frames.
type wsServerStream struct {
	net.Conn
	pending []byte
}

func (w *wsServerStream) Read(p []byte) (int, error) {
	for len(w.pending) == 0 {
		h, err := ws.ReadHeader(w.Conn)
		if err != nil {
			return 0, err
		}
		if h.Length > 64<<20 {
			return 0, errors.New("xpratest: websocket frame too large")
		}
		data := make([]byte, h.Length)
		if _, err := io.ReadFull(w.Conn, data); err != nil {
			return 0, err
		}
		if h.Masked {
			ws.Cipher(data, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpClose:
			return 0, io.EOF
		case ws.OpBinary, ws.OpText, ws.OpContinuation:
			w.pending = data
		}
	}
	n := copy(p, w.pending)
	w.pending = w.pending[n:]
	return n, nil
}

func (w *wsServerStream) Write(p []byte) (int, error) {
	if err := wsutil.WriteServerBinary(w.Conn, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// DialBrowser connects like the HTML5 client: ws:// (tlsConf nil) or
// wss:// to addr, with an Origin header, speaking rencodeplus.
func DialBrowser(addr string, tlsConf *tls.Config) (*Client, error) {
	scheme := "ws"
	if tlsConf != nil {
		scheme = "wss"
	}
	d := ws.Dialer{Timeout: 5 * time.Second, TLSConfig: tlsConf, Protocols: []string{"binary"},
		Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://" + addr}})}
	conn, br, _, err := d.Dial(context.Background(), scheme+"://"+addr+"/")
	if err != nil {
		return nil, err
	}
	if br != nil {
		ws.PutReader(br)
	}
	s := &wsStream{Conn: conn}
	c := NewClient(s, nil)
	c.Writer = frame.Writer{Encoding: frame.RencodePlus}
	return c, nil
}

// BrowserHello is the hello xpra-html5 v21 sends (the keys a proxy and a
// server act on).
func BrowserHello(user string) frame.Dict {
	return frame.NewDict("version", "6.5", "client_type", "HTML5", "username", user,
		"encoders", []any{"rencodeplus"}, "compressors", []any{"lz4", "brotli"},
		"digest", []any{"hmac+sha512", "hmac+sha384", "hmac+sha256", "xor"}, "salt-digest", []any{"hmac+sha512", "hmac+sha256"},
		"windows", true, "keyboard", true, "desktop_size", []any{1024, 768}, "encodings", []any{"rgb32", "png", "jpeg"})
}

// BrowserLogin logs in the way xpra-html5 v21 does: the client salt is a
// text string of 32 characters 0x00-0xFF, the digests are computed over
// those characters as bytes (latin-1). It returns the proxy's first packet
// after the answer: the server's hello, or a disconnect.
func (c *Client) BrowserLogin(user, password string) (frame.Packet, error) {
	hello := BrowserHello(user)
	if err := c.Send(frame.Packet{"hello", hello}); err != nil {
		return nil, err
	}
	p, err := c.Recv(10 * time.Second)
	if err != nil || p.Type() != "challenge" {
		return p, err
	}
	serverSalt, _ := frame.AsBytes(p[1])
	d, _ := frame.AsText(p[3])
	sd, _ := frame.AsText(p[4])
	raw := authn.Salt(32)
	// Make sure characters ≥ 0x80 are there: each is two UTF-8 bytes on
	// the wire but one byte to xpra.
	raw[0], raw[1] = 0xff, 0x80
	runes := make([]rune, len(raw))
	for i, b := range raw {
		runes[i] = rune(b)
	}
	combined, err := authn.Gen(authn.Digest(sd), raw, serverSalt)
	if err != nil {
		return nil, err
	}
	resp, err := authn.Gen(authn.Digest(d), []byte(password), combined)
	if err != nil {
		return nil, err
	}
	hello.Set("challenge_response", string(resp))
	hello.Set("challenge_client_salt", string(runes)) // text, as the browser sends it
	if err := c.Send(frame.Packet{"hello", hello}); err != nil {
		return nil, err
	}
	return c.Recv(10 * time.Second)
}

// ClosedCleanly reads until the connection ends and reports whether it
// ended with a WebSocket close frame (what a browser needs to show the
// reason it was sent) rather than the socket just closing.
func (c *Client) ClosedCleanly(timeout time.Duration) (bool, error) {
	c.Conn.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, c.Conn)
	var closed wsutil.ClosedError
	if errors.As(err, &closed) {
		return true, nil
	}
	return false, err
}
