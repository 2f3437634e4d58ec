package loop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/gobwas/ws"

	"github.com/xpraproxy/xpraproxy/relay"
)

// wsConn carries an xpra stream in WebSocket binary frames over a gnet
// connection, for the relay (it implements relay.Conn). Frame boundaries
// mean nothing to xpra (spec §3.3): inbound payloads are unmasked into one
// buffer that the relay Peeks like a socket's — the one copy of the
// payload; outbound writes become one frame each, header and payload
// going out in one writev.
type wsConn struct {
	relay.Conn        // the socket, its TLS layer or a stream
	in         []byte // decoded payload not yet consumed by the relay
	off        int

	// The frame being read.
	remaining int64 // payload bytes of the current data frame still to come
	mask      [4]byte
	masked    bool
	maskPos   int

	max int64 // largest frame accepted
	// requireMask refuses unmasked frames (a client's, RFC 6455 5.1).
	requireMask bool
	closed      bool // a close frame was sent
	broken      bool // bad framing: the rest is discarded
	hold        bool // flow control paused the session's reading: decode nothing more (park.go)
	hdr         [ws.MaxHeaderSize]byte
	rd          bytes.Reader
	iov         [][]byte
}

// Slack is the frames not yet decoded and the payload buffer's spare
// capacity, with what the layer below holds (relay.Slacker).
func (w *wsConn) Slack() int {
	return cap(w.in) - w.InboundBuffered() + w.Conn.InboundBuffered() + slackOf(w.Conn)
}

// errWSClosed: the peer sent a close frame (answered).
var errWSClosed = errors.New("loop: websocket closed by the peer")

func newWSConn(c relay.Conn, maxFrame int64) *wsConn {
	return &wsConn{Conn: c, max: maxFrame}
}

// HandoffLink is relay.Transported: a worker can take the connection
// over only between frames, and goes on applying the masking rule.
func (w *wsConn) HandoffLink() (relay.Link, error) {
	if w.remaining > 0 || w.Conn.InboundBuffered() > 0 {
		return relay.Link{}, errors.New("packet received before the server's hello")
	}
	_, overTLS := w.Conn.(*tlsConn)
	return relay.Link{Transport: "ws", RequireMask: w.requireMask, TLS: overTLS}, nil
}

// Transport is relay.Transporter: ws, wss over TLS, or the stream's own
// name when a stream carries the frames (xpra's quic).
func (w *wsConn) Transport() string {
	switch c := w.Conn.(type) {
	case *tlsConn:
		return "wss"
	case relay.Transporter:
		return c.Transport()
	}
	return "ws"
}

// decode moves every complete or partial data frame payload from gnet's
// buffer into w.in, answering pings and closes. Control frames are small
// and handled whole.
func (w *wsConn) decode() error {
	for !w.hold {
		avail := w.Conn.InboundBuffered()
		if avail == 0 {
			return nil
		}
		if w.remaining > 0 {
			n := int(min(int64(avail), w.remaining))
			b, err := w.Conn.Peek(n)
			if err != nil {
				return err
			}
			start := len(w.in)
			w.in = append(w.in, b...)
			if w.masked {
				ws.Cipher(w.in[start:], w.mask, w.maskPos)
				w.maskPos += n
			}
			w.Conn.Discard(n)
			w.remaining -= int64(n)
			continue
		}
		b, err := w.Conn.Peek(min(avail, ws.MaxHeaderSize))
		if err != nil {
			return err
		}
		w.rd.Reset(b)
		h, err := ws.ReadHeaderBuffer(&w.rd, w.hdr[:ws.MaxHeaderSize-2])
		if err != nil {
			if len(b) < ws.MaxHeaderSize {
				return nil // header incomplete: wait
			}
			return fmt.Errorf("loop: websocket header: %w", err)
		}
		hsize := len(b) - w.rd.Len()
		if w.requireMask && !h.Masked {
			return errors.New("loop: unmasked websocket frame from a client (RFC 6455 section 5.1)")
		}
		if h.Rsv != 0 {
			return errors.New("loop: websocket frame with reserved bits (no extension was negotiated)")
		}
		if h.Length < 0 || h.Length > w.max {
			return fmt.Errorf("loop: websocket frame of %d bytes exceeds the %d byte limit", uint64(h.Length), w.max)
		}
		switch {
		case h.OpCode.IsData() || h.OpCode == ws.OpContinuation:
			// Text frames are treated as binary, continuations appended:
			// the payloads form one byte stream.
			w.Conn.Discard(hsize)
			w.remaining, w.masked, w.mask, w.maskPos = h.Length, h.Masked, h.Mask, 0
		case h.OpCode.IsControl():
			if h.Length > 125 || !h.Fin {
				return errors.New("loop: invalid websocket control frame")
			}
			if avail < hsize+int(h.Length) {
				return nil
			}
			whole, err := w.Conn.Peek(hsize + int(h.Length))
			if err != nil {
				return err
			}
			payload := append([]byte(nil), whole[hsize:]...)
			if h.Masked {
				ws.Cipher(payload, h.Mask, 0)
			}
			w.Conn.Discard(hsize + int(h.Length))
			switch h.OpCode {
			case ws.OpPing:
				w.writeFrame(ws.OpPong, payload)
			case ws.OpClose:
				if !w.closed {
					w.writeFrame(ws.OpClose, payload)
					w.closed = true
				}
				return errWSClosed
			}
		default:
			return fmt.Errorf("loop: unknown websocket opcode %d", h.OpCode)
		}
	}
	return nil
}

// writeFrame sends one unmasked frame (servers never mask).
func (w *wsConn) writeFrame(op ws.OpCode, parts ...[]byte) (int, error) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	h := w.putHeader(op, n)
	w.iov = append(w.iov[:0], h)
	w.iov = append(w.iov, parts...)
	_, err := w.Conn.Writev(w.iov)
	clear(w.iov)
	return n, err
}

// putHeader encodes a FIN frame header without a mask into w.hdr.
func (w *wsConn) putHeader(op ws.OpCode, n int) []byte {
	b := w.hdr[:]
	b[0] = 0x80 | byte(op)
	switch {
	case n < 126:
		b[1] = byte(n)
		return b[:2]
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		return b[:4]
	}
	b[1] = 127
	binary.BigEndian.PutUint64(b[2:], uint64(n))
	return b[:10]
}

// The relay's view: the decoded stream.

func (w *wsConn) InboundBuffered() int { return len(w.in) - w.off }

func (w *wsConn) Peek(n int) ([]byte, error) {
	if n > w.InboundBuffered() || n < 0 {
		return nil, errors.New("loop: websocket peek beyond the buffered payload")
	}
	return w.in[w.off : w.off+n], nil
}

func (w *wsConn) Discard(n int) (int, error) {
	n = min(n, w.InboundBuffered())
	w.off += n
	switch {
	case w.off == len(w.in):
		// Drained: give the memory back unless it is small (an idle
		// session should hold nothing).
		if cap(w.in) > 4<<10 {
			w.in = nil
		} else {
			w.in = w.in[:0]
		}
		w.off = 0
	case w.off > len(w.in)/2 && w.off > 4096:
		w.in = w.in[:copy(w.in, w.in[w.off:])]
		w.off = 0
	}
	return n, nil
}

func (w *wsConn) Write(p []byte) (int, error) {
	if w.closed {
		return 0, net.ErrClosed
	}
	return w.writeFrame(ws.OpBinary, p)
}

func (w *wsConn) Writev(bs [][]byte) (int, error) {
	if w.closed {
		return 0, net.ErrClosed
	}
	return w.writeFrame(ws.OpBinary, bs...)
}

// SendClose queues a close frame (1000, normal closure) once; nothing
// is written after it.
func (w *wsConn) SendClose() {
	if !w.closed {
		w.writeFrame(ws.OpClose, []byte{0x03, 0xe8})
		w.closed = true
	}
}

// Close sends a close frame (1000) before the socket closes.
func (w *wsConn) Close() error {
	w.SendClose()
	return w.Conn.Close()
}
