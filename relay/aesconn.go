package relay

import (
	"errors"
	"fmt"
	"sync"

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

	clear  []byte  // opened frames not yet discarded
	pooled *[]byte // clear's backing while it came from cipherBuffers
	err    error   // the first decryption error: every later read returns it
}

// cipherBuffers lend a cipherConn its clear bytes and what it seals while
// data flows; drained, they go back, so that an idle encrypted session
// holds neither (BENCHMARKS.md, issue 27).
var cipherBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// giveBack returns a borrowed buffer unless it grew past what is worth
// keeping.
func giveBack(bp *[]byte, b []byte) {
	if cap(b) <= 1<<20 {
		*bp = b[:0]
		cipherBuffers.Put(bp)
	}
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
		if c.clear == nil {
			c.pooled = cipherBuffers.Get().(*[]byte)
			c.clear = (*c.pooled)[:0]
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
		c.release()
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
	bp := cipherBuffers.Get().(*[]byte)
	out := (*bp)[:0]
	defer func() { giveBack(bp, out) }()
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
	return n, nil
}

// release gives clear's buffer back: nothing is left to read.
func (c *cipherConn) release() {
	if c.pooled != nil {
		giveBack(c.pooled, c.clear)
	}
	c.clear, c.pooled = nil, nil
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
// ciphertext of a frame not yet whole (below) and the spare room of clear
// (Slacker); what Writev seals is handed to the socket before it returns.
func (c *cipherConn) Slack() int {
	n := cap(c.clear) - len(c.clear)
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
