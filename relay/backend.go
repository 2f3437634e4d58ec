package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
	"github.com/xpraproxy/xpraproxy/route"
)

// Backend is a logged-in connection to an xpra server, ready to relay.
type Backend struct {
	// Conn is the socket for the event loop: the TCP or unix socket, or
	// the plaintext end of a TLS bridge (ssl://, wss://).
	Conn net.Conn
	// WS is set for ws:// and wss:// targets: the loop frames the stream.
	WS *WSState
	// TLS: Conn is the plaintext end of a TLS bridge (ssl://, wss://),
	// whose record layer lives in this process's goroutines.
	TLS bool
	// Hello is the server's hello and the header it came with (its
	// encoder and compressor).
	Hello  frame.Dict
	Header frame.Header
	// AES is the server link's cipher when the session options ask for
	// one (aesserver.go); the loop reads and writes through it.
	AES *serverCipher
}

// DialConfig says how to reach and log in to a backend.
type DialConfig struct {
	Target  route.Target
	Network string // "tcp" or "unix"
	Address string // resolved socket path for local displays
	Hello   frame.Dict
	// Encoding is the client's encoder: the server decodes by header
	// flags, and using the client's keeps v6 (rencodeplus-only) servers
	// working.
	Encoding frame.Encoding
	// Password answers the server's challenge (target URL, else the
	// session option `password`).
	Password string
	Timeout  time.Duration
	// MaxPacketSize bounds the server's handshake packets.
	MaxPacketSize int
	// Link carries the TLS options of ssl://, wss:// and quic:// targets.
	Link *LinkOptions
}

// Dial connects to the backend and performs the client side of the xpra
// handshake: send the hello, answer a challenge, read the server's hello.
// It blocks (up to Timeout) and runs off the event loop.
func Dial(cfg DialConfig) (*Backend, error) {
	deadline := time.Now().Add(cfg.Timeout)
	if cfg.Target.Scheme == "quic" {
		return dialQUICBackend(cfg, deadline)
	}
	conn, err := net.DialTimeout(cfg.Network, cfg.Address, cfg.Timeout)
	if err != nil {
		return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "session not found error", Message: "failed to connect to display", Err: err}
	}
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "backend socket error", Err: err}
	}
	var (
		stream io.ReadWriter = conn
		tc     *tls.Conn
		wc     *wsClient
	)
	if cfg.Target.Scheme == "ssl" || cfg.Target.Scheme == "wss" {
		host, _, _ := net.SplitHostPort(cfg.Address)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		tc, err = clientTLS(ctx, conn, host, cfg.Link)
		cancel()
		if err != nil {
			conn.Close()
			return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "session not found error", Message: "TLS handshake with the server failed", Err: err}
		}
		stream = tc
	}
	if cfg.Target.Scheme == "ws" || cfg.Target.Scheme == "wss" {
		under := net.Conn(conn)
		if tc != nil {
			under = tc
		}
		if wc, err = upgradeWS(under, cfg.Address, cfg.Target.Display); err != nil {
			conn.Close()
			return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "session not found error", Message: "websocket upgrade with the server failed", Err: err}
		}
		stream = wc
	}
	b, err := handshake(stream, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "backend socket error", Err: err}
	}
	b.Conn = conn
	if wc != nil {
		b.WS = &WSState{Remaining: wc.remaining}
	}
	if tc != nil {
		b.TLS = true
		if b.Conn, err = Bridge(tc, nil); err != nil {
			tc.Close()
			return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot relay the TLS connection", Err: err}
		}
	}
	return b, nil
}

// Login performs Dial's handshake on a tcp connection the caller dialed
// (a Go client of an xpra server or of the proxy, such as the load
// generator); cfg's Target and Address are not used. Its deadline is
// cfg.Timeout during the handshake and cleared after.
func Login(conn net.Conn, cfg DialConfig) (*Backend, error) {
	cfg.Target.Scheme = "tcp"
	if err := conn.SetDeadline(time.Now().Add(cfg.Timeout)); err != nil {
		return nil, err
	}
	b, err := handshake(conn, cfg)
	if err != nil {
		return nil, err
	}
	b.Conn = conn
	return b, conn.SetDeadline(time.Time{})
}

func handshake(conn io.ReadWriter, cfg DialConfig) (*Backend, error) {
	fail := func(msg string, err error) error {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			msg = "timeout talking to the server"
		}
		return &disconnect.Error{Stage: disconnect.Backend, Reason: "session not found error", Message: msg, Err: err}
	}
	w := frame.Writer{Encoding: cfg.Encoding}
	var aes *serverCipher
	send := func(p frame.Packet) error {
		b, err := w.AppendPacket(nil, p)
		if err == nil && aes != nil {
			b, err = aes.seal(b)
		}
		if err != nil {
			return err
		}
		_, err = conn.Write(b)
		return err
	}
	var reader io.Reader = conn
	hello := cfg.Hello
	if cfg.Link != nil && cfg.Link.Encryption != "" {
		if cfg.Target.Scheme != "tcp" {
			return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "AES encryption is for tcp:// targets only"}
		}
		var err error
		if aes, err = newServerCipher(cfg.Link, cfg.Encoding, conn, cfg.MaxPacketSize); err == nil {
			hello, err = aes.hello(hello)
		}
		if err != nil {
			return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot encrypt toward the server", Err: err}
		}
		reader = &aes.r
	}
	if err := send(frame.Packet{"hello", hello}); err != nil {
		return nil, fail("failed to send the hello to the server", err)
	}
	r := frame.NewStreamReader(reader, cfg.MaxPacketSize)
	answered := false
	for {
		p, err := r.ReadPacket()
		var te *frame.TextError
		if errors.As(err, &te) {
			// xpra refuses a hello it cannot use with a line of text.
			words := refusalWords(te.Line)
			return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "session not found error", Message: "the server refused the connection: " + words, Refused: words}
		}
		if err != nil {
			return nil, fail("server connection lost during the handshake", err)
		}
		switch p.Type() {
		case "hello":
			caps, _ := p[1].(frame.Dict)
			if len(p) < 2 || caps == nil {
				return nil, fail("invalid hello from the server", nil)
			}
			if aes != nil {
				// The server's last parameters (xpra's client:
				// parse_encryption_capabilities).
				if err := aes.serverCaps(caps); err != nil {
					return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot encrypt toward the server", Err: err}
				}
			}
			return &Backend{Hello: caps, Header: r.Header(), AES: aes}, nil
		case "challenge":
			if answered {
				return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "authentication failed", Message: "the server refused the target's password"}
			}
			if cfg.Password == "" {
				return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "authentication failed", Message: "the server requires a password and the target has none"}
			}
			hello, err := challengeReply(cfg.Hello, p, cfg.Password)
			if err != nil {
				return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "authentication failed", Message: "cannot answer the server's challenge", Err: err}
			}
			if aes != nil {
				// The challenge carries the server's parameters; the
				// answer is encrypted with them and brings fresh ones.
				sc, _ := p[2].(frame.Dict)
				if err = aes.serverCaps(sc); err == nil {
					hello, err = aes.hello(hello)
				}
				if err != nil {
					return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot encrypt toward the server", Err: err}
				}
			}
			if err := send(frame.Packet{"hello", hello}); err != nil {
				return nil, fail("failed to send the challenge response", err)
			}
			answered = true
		case "disconnect":
			words := disconnectText(p)
			return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "session not found error", Message: "the server refused the connection: " + words, Refused: words}
		default:
			// Nothing else is expected before the hello; ignore it as
			// xpra's client does.
		}
	}
}

// challengeReply is the hello again with the response to the server's
// challenge ["challenge", salt, caps, digest, salt-digest, prompt].
func challengeReply(hello frame.Dict, ch frame.Packet, password string) (frame.Dict, error) {
	if len(ch) < 4 {
		return nil, fmt.Errorf("short challenge packet")
	}
	salt, ok := ch[1].([]byte)
	if !ok {
		s, isText := ch[1].(string)
		if !isText {
			return nil, fmt.Errorf("challenge salt is %T", ch[1])
		}
		salt, _ = frame.AsBytes(s)
	}
	digest, _ := frame.AsText(ch[3])
	saltDigest := "xor"
	if len(ch) > 4 {
		saltDigest, _ = frame.AsText(ch[4])
	}
	if digest == string(authn.DigestXOR) {
		return nil, fmt.Errorf("server asked for an xor digest over an unencrypted link")
	}
	resp, clientSalt, err := authn.Response([]byte(password), salt, authn.Digest(digest), authn.Digest(saltDigest))
	if err != nil {
		return nil, err
	}
	h := append(frame.Dict(nil), hello...)
	h.Set("challenge_response", string(resp))
	h.Set("challenge_client_salt", clientSalt)
	return h, nil
}

// disconnectText joins a disconnect packet's reason strings.
func disconnectText(p frame.Packet) string {
	s := ""
	for i, v := range p[1:] {
		t, _ := frame.AsText(v)
		if i > 0 {
			s += ": "
		}
		s += t
	}
	return s
}

// refusalWords is the reason in a server's plain-text refusal, without
// the "disconnect" word xpra puts before it.
func refusalWords(line string) string {
	w := strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(w, "disconnect"); ok {
		w = strings.TrimSpace(strings.TrimPrefix(rest, ":"))
	}
	return logsafe.String(w)
}
