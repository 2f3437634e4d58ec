package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/frame"
)

// Packet types the bench adds to xpra's: both proxies pass unknown types
// through unchanged.
const (
	pktStream = "bench-stream" // [type, size, window, verify]
	pktFlood  = "bench-flood"  // [type, size, bytes]: send without waiting for acks
)

// server is the simulated xpra server, one gnet engine for every session.
type server struct {
	gnet.BuiltinEventEngine
	eng     gnet.Engine
	ready   chan struct{}
	payload []byte // shared draw pixels; the first 8 bytes of each copy vary
	rest    uint32 // crc32 of payload[8:]

	// only, when set, is the one encoder this server speaks: it refuses
	// a hello in another with xpra's own words, as a real server of one
	// generation does (--server-peer: the proxy then bridges).
	only frame.Encoding

	sessions atomic.Int64
	sent     atomic.Int64
}

type serverConn struct {
	r       frame.Reader
	w       frame.Writer
	hello   bool
	size    int
	window  int
	verify  bool
	seq     uint32 // next draw
	acked   uint32
	session uint32
}

var nextServerSession atomic.Uint32

func newServer(payloadSize int) *server {
	p := make([]byte, max(payloadSize, 16))
	for i := range p {
		p[i] = byte(rand.Uint32())
	}
	return &server{ready: make(chan struct{}), payload: p, rest: crc32.ChecksumIEEE(p[8:])}
}

// run serves on addr until stop; it returns once listening.
func (s *server) run(addr string, loops int) (func(), error) {
	errc := make(chan error, 1)
	go func() {
		errc <- gnet.Run(s, "tcp://"+addr, gnet.WithNumEventLoop(loops), gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay), gnet.WithLogger(quietLogger{}))
	}()
	select {
	case <-s.ready:
	case err := <-errc:
		return nil, err
	case <-time.After(10 * time.Second):
		return nil, errors.New("bench: simulated server did not start")
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.eng.Stop(ctx)
		<-errc
	}, nil
}

func (s *server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	close(s.ready)
	return gnet.None
}

func (s *server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	c.SetContext(&serverConn{session: nextServerSession.Add(1), r: frame.Reader{MaxPacketSize: 64 << 20}})
	s.sessions.Add(1)
	return nil, gnet.None
}

func (s *server) OnClose(c gnet.Conn, _ error) gnet.Action {
	s.sessions.Add(-1)
	return gnet.None
}

func (s *server) OnTraffic(c gnet.Conn) gnet.Action {
	sc := c.Context().(*serverConn)
	return eachPacket(c, &sc.r, nil, func(p frame.Packet) gnet.Action {
		if enc := sc.r.Header().Flags.Encoding(); s.only != 0 && enc != s.only {
			// xpra 6.x's and 3.1's refusals of the other's hello.
			why := "disconnect: invalid packet format, 'rencode' decoder is not available\n"
			if s.only == frame.Rencode {
				why = "disconnect: invalid packet format, failed to parse rencodeplus packet\n"
			}
			c.Write([]byte(why))
			return gnet.Close
		}
		// Answer in the encoding the peer uses, as xpra servers do.
		if enc := sc.r.Header().Flags.Encoding(); enc != sc.w.Encoding || !sc.hello {
			switch enc {
			case frame.RencodePlus:
				sc.w = peerWriter(Peer6)
			case frame.Bencode:
				sc.w = peerWriter(PeerHTML5)
			default:
				sc.w = peerWriter(Peer31)
			}
		}
		return s.handle(c, sc, p)
	})
}

func (s *server) send(c gnet.Conn, sc *serverConn, p frame.Packet) {
	b, err := sc.w.AppendPacket(nil, p)
	if err == nil {
		c.Write(b)
	}
}

func (s *server) handle(c gnet.Conn, sc *serverConn, p frame.Packet) gnet.Action {
	switch p.Type() {
	case "hello":
		sc.hello = true
		s.send(c, sc, frame.Packet{"hello", serverHello(sc.w.Encoding)})
		if s.only == frame.RencodePlus {
			// A 6.x server's encodings follow its hello.
			s.send(c, sc, frame.Packet{"encodings", frame.NewDict("encodings", frame.NewDict("", []any{"rgb24", "png"}))})
		}
	case "ping":
		if len(p) > 1 {
			s.send(c, sc, frame.Packet{"ping_echo", p[1], 0, 0, 0, 0})
		}
	case pktStream:
		size, _ := frame.AsInt(p[1])
		window, _ := frame.AsInt(p[2])
		sc.size = int(min(max(size, 16), int64(len(s.payload))))
		sc.window = int(max(window, 1))
		sc.verify = len(p) > 3 && frame.Truth(p[3])
		s.fill(c, sc)
	case pktFlood:
		// A misbehaving server: everything at once, whatever the client
		// reads. The proxy must bound what it buffers for such a session.
		size, _ := frame.AsInt(p[1])
		total, _ := frame.AsInt(p[2])
		sc.size = int(min(max(size, 16), int64(len(s.payload))))
		sc.verify = true
		for sent := 0; sent < int(total); sent += sc.size {
			s.draw(c, sc)
		}
		sc.size = 0 // acks send nothing more
	case "damage-sequence":
		seq, _ := frame.AsInt(p[1])
		sc.acked = max(sc.acked, uint32(seq)+1)
		s.fill(c, sc)
	case "disconnect":
		return gnet.Close
	}
	return gnet.None
}

// fill keeps `window` draws in flight, as an xpra server does while it
// waits for damage-sequence acknowledgements.
func (s *server) fill(c gnet.Conn, sc *serverConn) {
	for sc.size > 0 && sc.seq-sc.acked < uint32(sc.window) {
		s.draw(c, sc)
	}
}

// draw sends ["draw", 1, 0, 0, w, h, "rgb24", <chunk>, seq, stride, opts]
// with the pixels as a raw chunk: 8 bytes of session and sequence, then
// the shared payload, written with writev so nothing large is copied.
func (s *server) draw(c gnet.Conn, sc *serverConn) {
	var prefix [8]byte
	binary.BigEndian.PutUint32(prefix[0:], sc.session)
	binary.BigEndian.PutUint32(prefix[4:], sc.seq)
	opts := frame.NewDict("lz4", 0)
	if sc.verify {
		crc := crc32.Update(crc32.ChecksumIEEE(prefix[:]), crc32.IEEETable, s.payload[8:sc.size])
		opts.Set("crc", int64(crc))
	}
	chunk := frame.Header{Index: 7, Size: uint32(sc.size)}.Append(prefix[:0:0])
	chunk = append(chunk, prefix[:]...)
	w := sc.w
	main, err := w.AppendPacket(nil, frame.Packet{"draw", 1, 0, 0, 128, sc.size / 512, "rgb24", []byte{}, int64(sc.seq), 512, opts})
	if err != nil {
		return
	}
	c.Writev([][]byte{chunk, s.payload[8:sc.size], main})
	sc.seq++
	s.sent.Add(int64(sc.size))
}

// quietLogger drops gnet's own log lines.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Warnf(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(string, ...any) {}
