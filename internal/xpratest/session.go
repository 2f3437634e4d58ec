package xpratest

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Conn is a relay.Conn over memory, for driving a relay.Session without a
// reactor: Feed puts bytes where Peek finds them, everything written is
// kept in Out, and Pending simulates bytes the socket has not taken yet
// (backpressure). Like gnet's, its methods run on one goroutine.
type Conn struct {
	in      []byte
	off     int
	Out     bytes.Buffer
	Pending int // what OutboundBuffered reports
	Closed  bool
	Addr    net.Addr
	FD      int // what Fd returns: -1, or a real socket for handoffs
	read    int // Out bytes already returned by Packets
	reader  *frame.Reader
}

// NewConn is a connection from addr ("127.0.0.1:5000" when empty).
func NewConn(addr string) *Conn {
	if addr == "" {
		addr = "127.0.0.1:5000"
	}
	a, _ := net.ResolveTCPAddr("tcp", addr)
	return &Conn{Addr: a, FD: -1}
}

// Feed appends bytes from the peer.
func (c *Conn) Feed(b []byte) { c.in = append(c.in, b...) }

// FeedPacket encodes p with w and feeds it.
func (c *Conn) FeedPacket(t testing.TB, w frame.Writer, p frame.Packet) {
	t.Helper()
	b, err := w.AppendPacket(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	c.Feed(b)
}

func (c *Conn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(c.in)-c.off {
		n = len(c.in) - c.off
	}
	return c.in[c.off : c.off+n], nil
}

func (c *Conn) Discard(n int) (int, error) {
	n = min(n, len(c.in)-c.off)
	c.off += n
	if c.off == len(c.in) {
		c.in, c.off = c.in[:0], 0
	}
	return n, nil
}

func (c *Conn) InboundBuffered() int  { return len(c.in) - c.off }
func (c *Conn) OutboundBuffered() int { return c.Pending }

func (c *Conn) Write(p []byte) (int, error) {
	if c.Closed {
		return 0, net.ErrClosed
	}
	return c.Out.Write(p)
}

func (c *Conn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		m, err := c.Write(b)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *Conn) Close() error         { c.Closed = true; return nil }
func (c *Conn) RemoteAddr() net.Addr { return c.Addr }
func (c *Conn) Fd() int              { return c.FD }

// Packets decodes the whole packets written since the last call; a frame
// still incomplete (a cut-through packet in progress) and raw chunks
// whose packet has not come are kept for the next call. A plain-text
// line (xpra's refusal before a hello) comes back as ["text", line].
func (c *Conn) Packets(t testing.TB) []frame.Packet {
	t.Helper()
	b := c.Out.Bytes()[c.read:]
	if len(b) > 0 && b[0] != frame.Magic && c.read == 0 {
		c.read = c.Out.Len()
		return []frame.Packet{{"text", string(b)}}
	}
	if c.reader == nil {
		c.reader = &frame.Reader{MaxPacketSize: frame.AbsMaxPacketSize}
	}
	var out []frame.Packet
	for len(b) > 0 {
		n, _, err := frame.FrameLen(b, 0)
		if errors.Is(err, frame.ErrShortBuffer) || (err == nil && n > len(b)) {
			break
		}
		p, n, err := c.reader.Next(b)
		if err != nil {
			t.Fatalf("the session wrote an invalid frame: %v", err)
		}
		b = b[n:]
		c.read += n
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// Host is a relay.Host without a reactor: off-loop work runs when Go is
// called, in its own goroutine as in the proxy, and its done callbacks,
// Posts and enrolments wait until Run, which plays the loop's turn.
type Host struct {
	mu      sync.Mutex
	queue   []func()
	pending sync.WaitGroup
	Server  *Conn // the backend's side once enrolled
	Admits  int
	Stages  []relay.LoginStage // Progress's, in order
	Watched int
	// Paused and Resumed count the flow-control requests.
	Paused, Resumed int
	Released        bool // Release was called
	// Refuse makes Go report a full queue.
	Refuse bool
	// Outcomes counts handshake results (CountHandshake).
	Outcomes map[string]int
}

func (h *Host) post(fn func()) {
	h.mu.Lock()
	h.queue = append(h.queue, fn)
	h.mu.Unlock()
}

func (h *Host) Go(kind relay.WorkKind, work, done func()) bool {
	if h.Refuse {
		return false
	}
	h.pending.Add(1)
	go func() {
		defer h.pending.Done()
		work()
		h.post(done)
	}()
	return true
}

func (h *Host) Admitted(*relay.Session) { h.Admits++ }

// Progress records the login stages the session reported, in order.
func (h *Host) Progress(_ *relay.Session, st relay.LoginStage) { h.Stages = append(h.Stages, st) }
func (h *Host) Stats() frame.Dict                              { return nil }

// CountHandshake records outcomes in Outcomes.
func (h *Host) CountHandshake(result string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.Outcomes == nil {
		h.Outcomes = map[string]int{}
	}
	h.Outcomes[result]++
}
func (h *Host) Watch(*relay.Session) { h.Watched++ }

// PauseReading and ResumeReading count the requests; a test Conn keeps
// whatever it was given, as a paused socket's buffered bytes stay
// readable.
func (h *Host) PauseReading(relay.Conn)  { h.Paused++ }
func (h *Host) ResumeReading(relay.Conn) { h.Resumed++ }
func (h *Host) Post(fn func())           { h.post(fn) }

// Release hands the client's socket over as the loop does for a plain
// socket: a dup, the connection closed.
func (h *Host) Release(c relay.Conn) (*os.File, error) {
	fd, err := syscall.Dup(c.Fd())
	if err != nil {
		return nil, err
	}
	h.Released = true
	c.Close()
	return os.NewFile(uintptr(fd), "client"), nil
}

// Enroll closes the backend's socket (its hello is in b) and serves the
// session's server side from a Conn, as the loop would.
func (h *Host) Enroll(s *relay.Session, b *relay.Backend) error {
	b.Conn.Close()
	h.post(func() {
		h.Server = NewConn(b.Conn.RemoteAddr().String())
		s.ServerOpened(h.Server, b, time.Now())
	})
	return nil
}

// Run waits for off-loop work and runs what it posted, until nothing is
// left (the loop's turn), within timeout.
func (h *Host) Run(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done := make(chan struct{})
		go func() { h.pending.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			t.Fatal("xpratest: off-loop work did not finish")
		}
		h.mu.Lock()
		q := h.queue
		h.queue = nil
		h.mu.Unlock()
		if len(q) == 0 {
			return
		}
		for _, fn := range q {
			fn()
		}
	}
}
