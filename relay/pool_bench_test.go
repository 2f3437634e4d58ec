package relay

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/valyala/bytebufferpool"

	"github.com/xpraproxy/xpraproxy/frame"
)

// The pooled-buffer comparison of issue 24 (docs/memory.md, "Pooled
// buffers"): for each place where the proxy encodes packets of its own
// into a scratch buffer, the same packet sequence written three ways —
// a fresh buffer per packet (alloc), the 64 KiB sync.Pool the bridge
// uses (syncpool), and github.com/valyala/bytebufferpool (bbp, a Pool of
// its own per benchmark so that it calibrates on that pattern alone).
// Every packet is copied out to a sink as gnet's Write does. kept-B is
// the mean capacity of the buffers given back to the pool: what the pool
// holds per buffer between packets (0 when it drops them). Run with
//
//	go test -run '^$' -bench 'Pool' -benchmem -count=5 ./relay/

// poolSink stands for the socket or gnet's outbound buffer.
var poolSink = make([]byte, 0, 256<<10)

func sinkWrite(b []byte) { poolSink = append(poolSink[:0], b...) }

// pixels are incompressible bytes, as encoded pictures are.
func pixels(n int) []byte {
	r := rand.New(rand.NewPCG(1, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// bridgedDraw is a 3.1 draw as a bridge writes it: data "" when the
// pixels travel in a chunk of their own (passed through), else inline
// (≤ 4 KiB: in the main packet, lz4-compressed with it; larger: a chunk
// frame the writer compresses).
func bridgedDraw(data []byte) frame.Packet {
	var d any = ""
	if data != nil {
		d = data
	}
	return frame.Packet{"draw", 1, 0, 0, 640, 480, "jpeg", d, 1234, 1920,
		frame.NewDict("quality", 80, "speed", 50, "flush", 0)}
}

var (
	poolAck   = frame.Packet{"damage-sequence", 1234, 1, 640, 480, 3, ""}
	poolPing  = frame.Packet{"ping", 123456, 1767225600000, "xpraproxy-0123456789abcdef0123456789abcdef"}
	poolDraw  = bridgedDraw(nil)
	poolDraw2 = bridgedDraw(pixels(2 << 10))
	poolDraw3 = bridgedDraw(pixels(30 << 10))
)

// poolPatterns are packet sequences, cycled.
var poolPatterns = []struct {
	name string
	w    frame.Writer
	seq  []frame.Packet
}{
	// The proxy's own pings (--proxy-ping), disconnects and echoes: small.
	{"own-ping", frame.Writer{Encoding: frame.Rencode}, []frame.Packet{poolPing}},
	// A bridged stream of 64 KiB draws (bench/bridge.sh): the pixels pass
	// as chunks, the main packets and the acks are re-encoded.
	{"bridged-stream", frame.Writer{Encoding: frame.Rencode, Compression: frame.AlgoLZ4.WithLevel(1)},
		[]frame.Packet{poolDraw, poolAck}},
	// A bridged desktop: mostly acks and chunked draws, some small inline
	// draws (compressed main packets), a few 30 KiB ones (a chunk frame).
	{"bridged-mixed", frame.Writer{Encoding: frame.Rencode, Compression: frame.AlgoLZ4.WithLevel(1)},
		mixed(poolAck, 45, poolDraw, 40, poolDraw2, 12, poolDraw3, 3)},
}

// mixed is a shuffled (always alike) sequence of n copies of each packet.
func mixed(counts ...any) []frame.Packet {
	var seq []frame.Packet
	for i := 0; i < len(counts); i += 2 {
		for range counts[i+1].(int) {
			seq = append(seq, counts[i].(frame.Packet))
		}
	}
	rand.New(rand.NewPCG(7, 7)).Shuffle(len(seq), func(i, j int) { seq[i], seq[j] = seq[j], seq[i] })
	return seq
}

func BenchmarkPoolEncode(b *testing.B) {
	for _, pat := range poolPatterns {
		b.Run(pat.name+"/alloc", func(b *testing.B) {
			w := pat.w
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				out, err := w.AppendPacket(nil, pat.seq[i%len(pat.seq)])
				if err != nil {
					b.Fatal(err)
				}
				sinkWrite(out)
			}
			b.ReportMetric(0, "kept-B")
			b.ReportMetric(1, "new/op")
		})
		b.Run(pat.name+"/syncpool", func(b *testing.B) {
			// encodeBuffers as bridgeWrite uses it.
			pool := sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
			w := pat.w
			var kept keptMeter[*[]byte]
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				bp := pool.Get().(*[]byte)
				kept.got(bp)
				out, err := w.AppendPacket((*bp)[:0], pat.seq[i%len(pat.seq)])
				if err != nil {
					b.Fatal(err)
				}
				sinkWrite(out)
				if cap(out) <= 1<<20 {
					*bp = out[:0]
					kept.put(bp, cap(out))
					pool.Put(bp)
				}
			}
			kept.report(b)
		})
		b.Run(pat.name+"/bbp", func(b *testing.B) {
			var pool bytebufferpool.Pool
			w := pat.w
			var kept keptMeter[*bytebufferpool.ByteBuffer]
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				bb := pool.Get()
				kept.got(bb)
				var err error
				bb.B, err = w.AppendPacket(bb.B[:0], pat.seq[i%len(pat.seq)])
				if err != nil {
					b.Fatal(err)
				}
				sinkWrite(bb.B)
				kept.put(bb, cap(bb.B))
				pool.Put(bb)
			}
			kept.report(b)
		})
	}
}

// keptMeter measures, for one goroutine cycling buffers through a pool,
// what the pool held between two uses: the capacity of the buffer last
// put when the next get returns it (0 when the pool had dropped it and
// made a new one), and how often a get had to make one (new/op).
type keptMeter[T comparable] struct {
	last     T
	lastCap  int
	has      bool
	kept     int
	gets, nw int
}

func (k *keptMeter[T]) got(v T) {
	k.gets++
	if k.has && v == k.last {
		k.kept += k.lastCap
	} else {
		k.nw++
	}
	k.has = false
}

func (k *keptMeter[T]) put(v T, c int) { k.last, k.lastCap, k.has = v, c, true }

func (k *keptMeter[T]) report(b *testing.B) {
	b.ReportMetric(float64(k.kept)/float64(max(1, k.gets)), "kept-B")
	b.ReportMetric(float64(k.nw)/float64(max(1, k.gets)), "new/op")
}
