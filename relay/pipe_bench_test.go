package relay

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/xpraproxy/xpraproxy/frame"
)

// memConn is a Conn over byte slices: Peek and Discard walk an input
// buffer, Write only counts (as a socket with room would), so a benchmark
// sees the relay's own cost: header checks, type peeks, and any copy.
type memConn struct {
	in      []byte
	off     int
	written int64
	copied  int64 // bytes the relay handed over in buffers it built itself
}

func (m *memConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(m.in)-m.off {
		n = len(m.in) - m.off
	}
	return m.in[m.off : m.off+n], nil
}
func (m *memConn) Discard(n int) (int, error) { m.off += n; return n, nil }
func (m *memConn) InboundBuffered() int       { return len(m.in) - m.off }
func (m *memConn) OutboundBuffered() int      { return 0 }
func (m *memConn) Write(p []byte) (int, error) {
	m.written += int64(len(p))
	return len(p), nil
}
func (m *memConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		n += len(b)
	}
	m.written += int64(n)
	return n, nil
}
func (m *memConn) Close() error         { return nil }
func (m *memConn) RemoteAddr() net.Addr { return nil }
func (m *memConn) Fd() int              { return -1 }

func drawStream(b *testing.B, link frame.Compression, n, size int) []byte {
	w := frame.Writer{Encoding: frame.Rencode, Compression: link}
	px := make([]byte, size)
	for i := range px {
		px[i] = byte(i * 7)
	}
	var out []byte
	for i := range n {
		var err error
		out, err = w.AppendPacket(out, frame.Packet{"draw", 1, 0, 0, 128, 128, "rgb24", frame.Compressed{Data: px}, i, 512, frame.NewDict("lz4", 1)})
		if err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func benchPipe(b *testing.B, link *LinkOptions, compress frame.Compression, stream []byte) {
	cfg := &Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Limits: Limits{MaxPacketSize: 64 << 20}}
	s := &Session{cfg: cfg, state: stateRelay}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	var dst memConn
	src := memConn{in: stream}
	p := &pipe{s: s, name: "server→client", src: &src, dst: &dst, max: frame.AbsMaxPacketSize, link: link, compress: compress}
	for b.Loop() {
		src.off = 0
		if err := p.pump(); err != nil {
			b.Fatal(err)
		}
		if src.off != len(stream) {
			b.Fatalf("pumped %d of %d bytes", src.off, len(stream))
		}
	}
	// Pass-through hands gnet the peeked slices: nothing is copied in user
	// space by the relay. Report what went out per op for comparison.
	b.ReportMetric(float64(dst.written)/float64(b.N), "out-B/op")
}

// 16 draw packets with 64 KiB pixel chunks, as a server sends them.
func BenchmarkRelayPassThrough(b *testing.B) {
	benchPipe(b, &LinkOptions{Level: -1}, 0, drawStream(b, frame.AlgoLZ4|1, 16, 64<<10))
}

// Small control-sized packets: the per-frame cost dominates.
func BenchmarkRelaySmallPackets(b *testing.B) {
	w := frame.Writer{Encoding: frame.Rencode}
	var stream []byte
	for i := range 256 {
		stream, _ = w.AppendPacket(stream, frame.Packet{"damage-sequence", i, 1, 128, 128, 0, ""})
	}
	benchPipe(b, &LinkOptions{Level: -1}, 0, stream)
}

// compression=0 links: server→client main packets are compressed for the
// client, which costs a copy and allocations.
func BenchmarkRelayCompressForClient(b *testing.B) {
	w := frame.Writer{Encoding: frame.Rencode}
	var stream []byte
	for i := range 64 {
		stream, _ = w.AppendPacket(stream, frame.Packet{"window-metadata", i, frame.NewDict("title", string(make([]byte, 2000)))})
	}
	benchPipe(b, &LinkOptions{Level: 0}, frame.AlgoLZ4|1, stream)
}
