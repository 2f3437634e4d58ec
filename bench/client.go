package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xprahello"
)

// clients is the load generator: one gnet client engine serving every
// simulated client connection.
type clients struct {
	gnet.BuiltinEventEngine
	cli       *gnet.Client
	password  string
	transport string
	peer      string // Peer31 or Peer6
	// aesKeyFile is the AES transports' key (aes.go).
	aesKeyFile string
	realHello  bool
	onReady    func(*clientConn) // runs on the conn's loop when the hello arrives
	onClose    func(*clientConn)

	ready, failed, closed atomic.Int64
	bytes, packets        atomic.Int64
	badData               atomic.Int64
	maxGap                atomic.Int64 // the longest gap between two draws of one session (ns)

	mu      sync.Mutex
	rtts    []time.Duration // ping round trips
	lastErr string
}

type clientConn struct {
	id       int
	user     string
	conn     gnet.Conn
	r        frame.Reader
	w        frame.Writer
	hello    frame.Dict
	isReady  bool
	started  time.Time
	setup    time.Duration
	nextSeq  uint32
	session  uint32 // server session id, learnt from the first draw
	verify   bool
	streamOK bool
	lastDraw int64 // unix ns of the last draw
}

func newClients(loops int, password, transport, peer string, realHello bool) (*clients, error) {
	c := &clients{password: password, transport: transport, peer: peer, realHello: realHello}
	cli, err := gnet.NewClient(c, gnet.WithNumEventLoop(loops), gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(quietLogger{}), gnet.WithTicker(false))
	if err != nil {
		return nil, err
	}
	if err := cli.Start(); err != nil {
		return nil, err
	}
	c.cli = cli
	return c, nil
}

func (c *clients) stop() { c.cli.Stop() }

// helloCaps is a minimal xpra 3.1 client hello: enough for xpra's proxy
// and server to accept it (version, encoders, digests), with aliases
// off so that packet types stay names.
func helloCaps(user string) frame.Dict {
	h := xprahello.Client(xprahello.Gen31, user)
	h.Set("uuid", "bench-"+user)
	h.Set("client_type", "bench")
	h.Set("compression_level", 0)
	return h
}

// open dials target from source (a loopback address) and hands the socket
// to the engine; the handshake then runs on the event loop.
func (c *clients) open(id int, user, source, target string) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	nc, err := dialTransport(&d, c.transport, target, user, c.password, c.peer, c.aesKeyFile)
	if err != nil {
		c.fail(fmt.Errorf("dial %s: %w", target, err))
		return err
	}
	cc := &clientConn{id: id, user: user, started: time.Now(), w: peerWriter(c.peer)}
	cc.r.MaxPacketSize = 64 << 20
	if _, err := c.cli.EnrollContext(nc, cc); err != nil {
		nc.Close()
		c.fail(err)
		return err
	}
	return nil
}

func (c *clients) fail(err error) {
	c.failed.Add(1)
	c.mu.Lock()
	c.lastErr = err.Error()
	c.mu.Unlock()
}

func (c *clients) OnOpen(conn gnet.Conn) ([]byte, gnet.Action) {
	cc := conn.Context().(*clientConn)
	cc.conn = conn
	cc.hello = clientHello(c.peer, c.realHello, cc.user)
	return cc.packet(frame.Packet{"hello", cc.hello}), gnet.None
}

func (cc *clientConn) packet(p frame.Packet) []byte {
	b, _ := cc.w.AppendPacket(nil, p)
	return b
}

func (cc *clientConn) send(p frame.Packet) {
	cc.conn.Write(cc.packet(p))
}

func (c *clients) OnClose(conn gnet.Conn, err error) gnet.Action {
	cc, _ := conn.Context().(*clientConn)
	c.closed.Add(1)
	if cc != nil && !cc.isReady {
		if err == nil {
			err = errors.New("closed during the handshake")
		}
		c.fail(err)
	}
	if c.onClose != nil && cc != nil {
		c.onClose(cc)
	}
	return gnet.None
}

func (c *clients) OnTraffic(conn gnet.Conn) gnet.Action {
	cc := conn.Context().(*clientConn)
	return eachPacket(conn, &cc.r, func(err error) { c.fail(err) }, func(p frame.Packet) gnet.Action {
		return c.handle(cc, p)
	})
}

// eachPacket hands every complete packet buffered on conn to handle, on
// the conn's loop; a protocol error closes the connection.
func eachPacket(conn gnet.Conn, r *frame.Reader, onErr func(error), handle func(frame.Packet) gnet.Action) gnet.Action {
	for {
		buf, _ := conn.Peek(conn.InboundBuffered())
		if len(buf) == 0 {
			return gnet.None
		}
		p, n, err := r.Next(buf)
		if errors.Is(err, frame.ErrShortBuffer) {
			return gnet.None
		}
		if err != nil {
			if onErr != nil {
				onErr(err)
			}
			return gnet.Close
		}
		conn.Discard(n)
		if p == nil {
			continue
		}
		if act := handle(p); act != gnet.None {
			return act
		}
	}
}

func (c *clients) handle(cc *clientConn, p frame.Packet) gnet.Action {
	switch p.Type() {
	case "challenge":
		salt, _ := p[1].([]byte)
		d, _ := frame.AsText(p[3])
		sd, _ := frame.AsText(p[4])
		resp, cs, err := authn.Response([]byte(c.password), salt, authn.Digest(d), authn.Digest(sd))
		if err != nil {
			c.fail(err)
			return gnet.Close
		}
		h := append(frame.Dict(nil), cc.hello...)
		h.Set("challenge_response", string(resp))
		h.Set("challenge_client_salt", cs)
		cc.send(frame.Packet{"hello", h})
	case "hello":
		if !cc.isReady {
			cc.isReady = true
			cc.setup = time.Since(cc.started)
			c.ready.Add(1)
			if c.onReady != nil {
				c.onReady(cc)
			}
		}
	case "disconnect":
		msg := ""
		for _, v := range p[1:] {
			s, _ := frame.AsText(v)
			msg += s + " "
		}
		c.fail(fmt.Errorf("disconnected: %s", msg))
		return gnet.Close
	case "ping_echo":
		if sent, ok := frame.AsInt(p[1]); ok {
			rtt := time.Duration(time.Now().UnixNano() - sent)
			c.mu.Lock()
			c.rtts = append(c.rtts, rtt)
			c.mu.Unlock()
		}
	case "draw":
		c.onDraw(cc, p)
	}
	return gnet.None
}

// onDraw checks the pixels (session and sequence prefix; the crc when the
// server sent one) and acknowledges them, which lets the server send more.
func (c *clients) onDraw(cc *clientConn, p frame.Packet) {
	data, _ := p[7].([]byte)
	seq, _ := frame.AsInt(p[8])
	ok := len(data) >= 8 && binary.BigEndian.Uint32(data[4:]) == uint32(seq) && uint32(seq) == cc.nextSeq
	if ok {
		s := binary.BigEndian.Uint32(data)
		if cc.nextSeq == 0 {
			cc.session = s
		}
		ok = s == cc.session
	}
	if opts, _ := p[10].(frame.Dict); ok && opts != nil {
		if want, has := opts.Int("crc"); has {
			ok = int64(crc32.ChecksumIEEE(data)) == want
		}
	}
	if !ok {
		c.badData.Add(1)
	}
	cc.nextSeq = uint32(seq) + 1
	now := time.Now().UnixNano()
	if cc.lastDraw > 0 {
		for gap := now - cc.lastDraw; ; {
			old := c.maxGap.Load()
			if gap <= old || c.maxGap.CompareAndSwap(old, gap) {
				break
			}
		}
	}
	cc.lastDraw = now
	c.bytes.Add(int64(len(data)))
	c.packets.Add(1)
	cc.send(frame.Packet{"damage-sequence", seq, 1, 128, 1, 0, ""})
}

func (c *clients) takeRTTs() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rtts
	c.rtts = nil
	return r
}

func (c *clients) lastError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}
