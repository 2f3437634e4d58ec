package xpratest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xprahello"
)

// Client is a minimal xpra 3.1 client.
type Client struct {
	Conn net.Conn
	// Writer frames what Send writes (lz4 at level 1 unless changed).
	Writer frame.Writer
	r      *frame.StreamReader
	stream io.Writer // where packets go: Conn, or a WebSocket framing over it
}

// NewClient is a client over an established connection c whose xpra
// stream is stream (nil: c itself; a WebSocket or TLS layer otherwise).
func NewClient(c net.Conn, stream io.ReadWriter) *Client {
	if stream == nil {
		stream = c
	}
	return &Client{Conn: c, r: frame.NewStreamReader(stream, 0), stream: stream, Writer: xprahello.Writer(xprahello.Gen31, 1)}
}

// ReadPacket reads the next packet with whatever deadline Conn has.
func (c *Client) ReadPacket() (frame.Packet, error) { return c.r.ReadPacket() }

// Dial connects to addr from the loopback address source ("" for any).
func Dial(addr, source string) (*Client, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewClient(c, nil), nil
}

// Dial6 is Dial for a client that writes as xpra 6.x does (rencodeplus).
func Dial6(addr, source string) (*Client, error) {
	c, err := Dial(addr, source)
	if err == nil {
		c.Writer = xprahello.Writer(xprahello.Gen6, 1)
	}
	return c, err
}

// Hello is an xpra 3.1 client's minimal hello for user.
func Hello(user string) frame.Dict { return xprahello.Client(xprahello.Gen31, user) }

// Hello6 is an xpra 6.x client's minimal hello for user (send it with a
// client made by Dial6).
func Hello6(user string) frame.Dict { return xprahello.Client(xprahello.Gen6, user) }

// Send writes one packet.
func (c *Client) Send(p frame.Packet) error {
	b, err := c.Writer.AppendPacket(nil, p)
	if err != nil {
		return err
	}
	_, err = c.stream.Write(b)
	return err
}

// Recv reads one packet within timeout.
func (c *Client) Recv(timeout time.Duration) (frame.Packet, error) {
	c.Conn.SetReadDeadline(time.Now().Add(timeout))
	return c.r.ReadPacket()
}

// Login sends hello (Hello(user) when nil), answers the challenge with
// password, and returns the proxy's first packet after it: the server's
// hello, or a disconnect.
func (c *Client) Login(user, password string, hello frame.Dict) (frame.Packet, error) {
	if hello == nil {
		hello = Hello(user)
	}
	if err := c.Send(frame.Packet{"hello", hello}); err != nil {
		return nil, err
	}
	p, err := c.Recv(10 * time.Second)
	if err != nil || p.Type() != "challenge" {
		return p, err
	}
	hello, err = AnswerChallenge(hello, p, password)
	if err != nil {
		return nil, err
	}
	if err := c.Send(frame.Packet{"hello", hello}); err != nil {
		return nil, err
	}
	return c.Recv(10 * time.Second)
}

// AnswerChallenge is hello again with the answer to a challenge packet
// ["challenge", salt, caps, digest, salt-digest, prompt], as xpra's
// client computes it.
func AnswerChallenge(hello frame.Dict, ch frame.Packet, password string) (frame.Dict, error) {
	if len(ch) < 5 {
		return nil, fmt.Errorf("xpratest: short challenge %v", ch)
	}
	salt, _ := frame.AsBytes(ch[1])
	d, _ := frame.AsText(ch[3])
	sd, _ := frame.AsText(ch[4])
	resp, cs, err := authn.Response([]byte(password), salt, authn.Digest(d), authn.Digest(sd))
	if err != nil {
		return nil, err
	}
	h := append(frame.Dict(nil), hello...)
	h.Set("challenge_response", string(resp))
	h.Set("challenge_client_salt", cs)
	return h, nil
}

// Ping sends a ping and waits for its echo, skipping other packets (the
// proxy's own pings are answered).
func (c *Client) Ping(timeout time.Duration) error {
	now := time.Now().UnixMilli()
	if err := c.Send(frame.Packet{"ping", now, 0, "xpratest"}); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p, err := c.Recv(time.Until(deadline))
		if err != nil {
			return err
		}
		switch p.Type() {
		case "ping_echo":
			if v, ok := p[1].(int64); ok && v == now {
				return nil
			}
		case "ping":
			c.Send(frame.Packet{"ping_echo", p[1], 0, 0, 0, 0})
		case "disconnect":
			return fmt.Errorf("xpratest: disconnected: %v", p)
		}
	}
	return errors.New("xpratest: no ping echo")
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }
