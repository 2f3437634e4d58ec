package relay

import (
	"errors"
	"fmt"

	"github.com/xpraproxy/xpraproxy/frame"
)

// cipherConn stands between an encrypted client's socket and the session.
// Reading, it opens whole encrypted frames from the socket's buffer into
// clear, a buffer it owns, and offers only whole clear frames; writing, it
// seals the clear byte stream in whatever pieces the pipes write (cut
// through frames included) into out's scratch, which the socket copies.
// Until the proxy has a decryptor it reads the socket as it is (the
// client's first hello is clear); until it has an encryptor it writes
// clear.
type cipherConn struct {
	Conn
	in  *frame.Decryptor
	out *frame.Encryptor
	max int // the largest frame payload to open: the login's limit, then the session's

	clear   []byte // opened frames not yet discarded
	err     error  // the first decryption error: every later read returns it
	scratch []byte
}

// readAhead bounds the clear bytes opened ahead of the session's reads
// (beyond one frame).
const readAhead = 1 << 20

// Unwrap is the socket under the cipher, for the reactor's flow control.
func (c *cipherConn) Unwrap() Conn { return c.Conn }

func (c *cipherConn) setIn(d *frame.Decryptor) {
	c.in = d
}

// fill opens what whole frames the socket holds.
func (c *cipherConn) fill() {
	for c.err == nil && len(c.clear) < readAhead {
		avail := c.Conn.InboundBuffered()
		if avail < frame.HeaderSize {
			return
		}
		hdr, err := c.Conn.Peek(frame.HeaderSize)
		if err != nil {
			return
		}
		size, _, err := c.in.EncryptedLen(hdr, c.max)
		if err != nil {
			c.err = err
			return
		}
		if avail < size {
			return
		}
		buf, err := c.Conn.Peek(size)
		if err != nil {
			return
		}
		var n int
		c.clear, n, err = c.in.Open(c.clear, buf, c.max)
		if err != nil {
			c.err = err
			return
		}
		c.Conn.Discard(n)
	}
}

// InboundBuffered is the clear bytes ready; after a decryption error, 1,
// so that the reader's Peek meets the error.
func (c *cipherConn) InboundBuffered() int {
	if c.in == nil && c.out != nil && c.err == nil && c.Conn.InboundBuffered() > 0 {
		// A handed-over client says nothing before the server's hello.
		c.err = errors.New("packet received before the server's hello")
	}
	if c.in == nil && c.err == nil {
		return c.Conn.InboundBuffered()
	}
	if c.in != nil {
		c.fill()
	}
	if c.err != nil {
		return len(c.clear) + 1
	}
	return len(c.clear)
}

func (c *cipherConn) Peek(n int) ([]byte, error) {
	if c.in == nil && c.err == nil {
		return c.Conn.Peek(n)
	}
	if n <= len(c.clear) && n >= 0 {
		return c.clear[:n], nil
	}
	if c.err != nil {
		return nil, c.err
	}
	return nil, frame.ErrShortBuffer
}

func (c *cipherConn) Discard(n int) (int, error) {
	if c.in == nil && c.err == nil {
		return c.Conn.Discard(n)
	}
	if n >= len(c.clear) {
		n = len(c.clear)
		c.clear = c.clear[:0]
		if cap(c.clear) > 64<<10 {
			c.clear = nil // an idle session holds nothing
		}
		return n, nil
	}
	rest := copy(c.clear, c.clear[n:])
	c.clear = c.clear[:rest]
	return n, nil
}

func (c *cipherConn) Write(b []byte) (int, error) {
	if c.out == nil {
		return c.Conn.Write(b)
	}
	return c.Writev([][]byte{b})
}

func (c *cipherConn) Writev(bs [][]byte) (int, error) {
	if c.out == nil {
		return c.Conn.Writev(bs)
	}
	out := c.scratch[:0]
	n := 0
	var err error
	for _, b := range bs {
		if out, err = c.out.Seal(out, b); err != nil {
			return 0, fmt.Errorf("relay: encrypt for the client: %w", err)
		}
		n += len(b)
	}
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	if cap(out) <= 64<<10 {
		c.scratch = out[:0]
	} else {
		c.scratch = nil
	}
	return n, nil
}

// cipherReason is the text a decryption error gives the client, xpra's
// own where it has one.
func cipherReason(err error) (string, bool) {
	var pe *frame.PaddingError
	switch {
	case errors.As(err, &pe):
		return pe.Error(), true
	case errors.Is(err, frame.ErrUnencrypted):
		return err.Error(), true
	}
	return "", false
}

// Slack counts what the cipher holds beyond the clear bytes offered: the
// ciphertext of a frame not yet whole (below), the spare room of clear
// and of the scratch buffer (Slacker).
func (c *cipherConn) Slack() int {
	n := cap(c.clear) - len(c.clear) + cap(c.scratch)
	if c.in != nil {
		n += c.Conn.InboundBuffered()
	}
	if sl, ok := c.Conn.(Slacker); ok {
		n += sl.Slack()
	}
	return n
}

// isCipher reports whether c is an encrypted link's cipherConn.
func isCipher(c Conn) bool {
	_, ok := c.(*cipherConn)
	return ok
}
