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

func drawStream(b testing.TB, link frame.Compression, n, size int) []byte {
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

// pipeUnderTest is a server→client pipe of a relaying session over
// memConns, and a function that pumps the whole stream through it once.
func pipeUnderTest(tb testing.TB, link *LinkOptions, compress frame.Compression, stream []byte) (*memConn, func()) {
	cfg := &Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Limits: Limits{MaxPacketSize: 64 << 20}}
	s := &Session{cfg: cfg, state: stateRelay}
	var dst memConn
	src := memConn{in: stream}
	p := &pipe{s: s, src: &src, dst: &dst, max: frame.AbsMaxPacketSize, link: link, compress: compress}
	return &dst, func() {
		src.off = 0
		if err := p.pump(); err != nil {
			tb.Fatal(err)
		}
		if src.off != len(stream) {
			tb.Fatalf("pumped %d of %d bytes", src.off, len(stream))
		}
	}
}

func benchPipe(b *testing.B, link *LinkOptions, compress frame.Compression, stream []byte) {
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	dst, pump := pipeUnderTest(b, link, compress, stream)
	if !link.Uncompressed() {
		// Pass-through must stay free of allocations per packet: the
		// benchmark fails (in CI too) the day it does not.
		if allocs := testing.AllocsPerRun(5, pump); allocs > 0 {
			b.Fatalf("the relay path allocated %.1f times per pump of the stream", allocs)
		}
	}
	dst.written = 0
	for b.Loop() {
		pump()
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
// client, into a pooled buffer (one copy, no allocation).
func BenchmarkRelayCompressForClient(b *testing.B) {
	w := frame.Writer{Encoding: frame.Rencode}
	var stream []byte
	for i := range 64 {
		stream, _ = w.AppendPacket(stream, frame.Packet{"window-metadata", i, frame.NewDict("title", string(make([]byte, 2000)))})
	}
	benchPipe(b, &LinkOptions{Level: 0}, frame.AlgoLZ4|1, stream)
}

// The relay path allocates nothing per packet, whatever the packets:
// raw chunks, small control packets, large main packets cut through.
func TestRelayPathAllocatesNothing(t *testing.T) {
	w := frame.Writer{Encoding: frame.Rencode}
	var small, big []byte
	for i := range 256 {
		small, _ = w.AppendPacket(small, frame.Packet{"damage-sequence", i, 1, 128, 128, 0, ""})
	}
	big, _ = w.AppendPacket(big, frame.Packet{"big", string(make([]byte, 2<<20))})
	for name, stream := range map[string][]byte{"draws": drawStream(t, frame.AlgoLZ4|1, 16, 64<<10), "small": small, "cut-through": big} {
		_, pump := pipeUnderTest(t, &LinkOptions{Level: -1}, 0, stream)
		pump() // warm: the writev list grows once
		if allocs := testing.AllocsPerRun(20, pump); allocs > 0 {
			t.Errorf("%s: %.1f allocations per pump", name, allocs)
		}
	}
	// Main packets compressed for a client of a compression=0 link (into
	// a pooled buffer: see raceEnabled).
	if raceEnabled {
		return
	}
	var meta []byte
	for i := range 64 {
		meta, _ = w.AppendPacket(meta, frame.Packet{"window-metadata", i, frame.NewDict("title", string(make([]byte, 2000)))})
	}
	_, pump := pipeUnderTest(t, &LinkOptions{Level: 0}, frame.AlgoLZ4|1, meta)
	pump()
	if allocs := testing.AllocsPerRun(20, pump); allocs > 0 {
		t.Errorf("compress for the client: %.1f allocations per pump", allocs)
	}
}
