package loop

import (
	"crypto/tls"
	"errors"
	"io"
	"sync"
	"syscall"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/relay"
)

// tlsConn is a TLS connection's decrypted stream on the loop; it is a
// gnet.Conn (and so a relay.Conn) whose Peek, Discard and
// InboundBuffered see plaintext and whose writes are encrypted. Context,
// loop, addresses, the fd and OutboundBuffered (ciphertext not yet sent)
// are the socket's.
//
// Ownership: in holds plaintext that crypto/tls produced and nobody has
// consumed; slices returned by Peek are valid until the next Discard or
// decrypt. in's backing comes from plainBuffers while data flows and goes
// back when it is drained, so an idle session holds none.
type tlsConn struct {
	gnet.Conn
	tc   *tls.Conn
	sock *tlsSocket

	in     []byte
	off    int
	pooled *[]byte // in's backing when it came from plainBuffers
	eof    bool    // the peer closed the TLS stream (or broke it)
	hold   bool    // flow control paused the session's reading: decrypt nothing more (park.go)
	err    error
}

// plainChunk is a TLS record's largest plaintext: decrypt keeps this much
// room free so that each crypto/tls read takes a whole record.
const plainChunk = 16 << 10

var plainBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// gatherBuffers hold a Writev's pieces while crypto/tls encrypts them as
// one write (a relay writev is many small pieces: headers, chunks).
var gatherBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// decrypt moves what crypto/tls can decrypt from the buffered ciphertext
// into in. It returns an error when the stream ended (io.EOF: the peer's
// close_notify) or broke; the plaintext before it is still in.
func (t *tlsConn) decrypt() error {
	if t.eof {
		return t.err
	}
	for !t.hold {
		if cap(t.in)-len(t.in) < plainChunk {
			t.grow()
		}
		n, err := t.tc.Read(t.in[len(t.in):cap(t.in)])
		t.in = t.in[:len(t.in)+n]
		if err != nil {
			if errors.Is(err, errWouldBlock) {
				err = nil
			} else {
				t.eof, t.err = true, err
			}
			t.release()
			return err
		}
	}
	return nil
}

// grow makes room for another record: a pooled buffer first, then a
// bigger one of its own when the relay has not consumed what is there.
func (t *tlsConn) grow() {
	unread := t.in[t.off:]
	if t.pooled == nil && t.in == nil {
		t.pooled = plainBuffers.Get().(*[]byte)
		t.in, t.off = (*t.pooled)[:0], 0
		return
	}
	if t.off > 0 && cap(t.in)-len(unread) >= plainChunk {
		t.in, t.off = t.in[:copy(t.in, unread)], 0
		return
	}
	bigger := make([]byte, len(unread), 2*cap(t.in)+plainChunk)
	copy(bigger, unread)
	t.putBack()
	t.in, t.off = bigger, 0
}

// release gives in's memory back when nothing is left to read.
func (t *tlsConn) release() {
	if t.off < len(t.in) {
		return
	}
	t.putBack()
	t.in, t.off = nil, 0
}

func (t *tlsConn) putBack() {
	if t.pooled != nil {
		*t.pooled = (*t.pooled)[:0]
		plainBuffers.Put(t.pooled)
		t.pooled = nil
	}
}

func (t *tlsConn) InboundBuffered() int { return len(t.in) - t.off }

// Slack is the ciphertext not yet decrypted and the plaintext buffer's
// spare capacity, with what the socket's stand-in holds (relay.Slacker).
func (t *tlsConn) Slack() int {
	return cap(t.in) - t.InboundBuffered() + t.Conn.InboundBuffered() + slackOf(t.Conn)
}

func (t *tlsConn) Peek(n int) ([]byte, error) {
	if n <= 0 {
		n = t.InboundBuffered()
	}
	if n > t.InboundBuffered() {
		return nil, io.ErrShortBuffer
	}
	return t.in[t.off : t.off+n], nil
}

func (t *tlsConn) Discard(n int) (int, error) {
	if n <= 0 || n > t.InboundBuffered() {
		n = t.InboundBuffered()
	}
	t.off += n
	t.release()
	return n, nil
}

func (t *tlsConn) Read(b []byte) (int, error) {
	n := copy(b, t.in[t.off:])
	t.Discard(n)
	return n, nil
}

func (t *tlsConn) Next(n int) ([]byte, error) {
	b, err := t.Peek(n)
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), b...)
	t.Discard(len(b))
	return out, nil
}

// Write encrypts p; the records go to gnet in one write.
func (t *tlsConn) Write(p []byte) (int, error) {
	s := t.sock
	bp := gatherBuffers.Get().(*[]byte)
	s.gather, s.batch = true, (*bp)[:0]
	n, err := t.tc.Write(p)
	s.gather = false
	if len(s.batch) > 0 {
		if _, werr := s.c.Write(s.batch); werr != nil && err == nil {
			err = werr
		}
	}
	if cap(s.batch) <= 1<<20 {
		*bp = s.batch[:0]
		gatherBuffers.Put(bp)
	}
	s.batch = nil
	return n, err
}

// Writev encrypts the pieces together: records as large as they allow,
// whatever the pieces' sizes.
func (t *tlsConn) Writev(bs [][]byte) (int, error) {
	gp := gatherBuffers.Get().(*[]byte)
	buf := (*gp)[:0]
	total := 0
	var err error
	for _, b := range bs {
		for len(b) > 0 {
			k := min(len(b), cap(buf)-len(buf))
			buf = append(buf, b[:k]...)
			b = b[k:]
			if len(buf) == cap(buf) {
				n, werr := t.Write(buf)
				total += n
				buf = buf[:0]
				if werr != nil {
					err = werr
					break
				}
			}
		}
		if err != nil {
			break
		}
	}
	if err == nil && len(buf) > 0 {
		n, werr := t.Write(buf)
		total, err = total+n, werr
	}
	*gp = buf[:0]
	gatherBuffers.Put(gp)
	return total, err
}

// CloseWrite sends close_notify and shuts the socket's sending side once
// it is out (relay's half-close of a client).
func (t *tlsConn) CloseWrite() error {
	if err := t.tc.CloseWrite(); err != nil {
		return err
	}
	if t.Conn.OutboundBuffered() == 0 {
		return syscall.Shutdown(t.Conn.Fd(), syscall.SHUT_WR)
	}
	return nil
}

// Close sends close_notify and closes the socket.
func (t *tlsConn) Close() error {
	err := t.tc.Close()
	t.dropBuffers()
	return err
}

// dropBuffers gives the plaintext buffer back (the connection is gone).
func (t *tlsConn) dropBuffers() {
	t.putBack()
	t.in, t.off = nil, 0
}

// HandoffLink is relay.Transported: the record layer stays in this
// process (crypto/tls cannot hand a live session's keys to another), and
// a worker gets the plaintext through a splice (splice.go).
func (t *tlsConn) HandoffLink() (relay.Link, error) { return relay.Link{TLS: true}, nil }

// Transport is relay.Transporter: xpra's name for TLS.
func (t *tlsConn) Transport() string { return "ssl" }
