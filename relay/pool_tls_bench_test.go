package relay

import (
	"sync"
	"testing"

	"github.com/valyala/bytebufferpool"
)

// The access patterns of loop/tlsconn.go's two pools, replayed without
// crypto (the pools are what is compared; AES-GCM on a 16 KiB record
// costs microseconds either way), for docs/memory.md "Pooled buffers".
// They sit beside relay's pool benchmarks, whose keptMeter they share.
//
// plainBuffers: a TLS connection borrows a plaintext buffer when records
// arrive, decrypts into it with at least a record's room (16 KiB) free,
// and gives it back once the relay has consumed it. gatherBuffers: a
// Writev gathers the relay's pieces into 64 KiB before encrypting them.

const tlsRecord = 16 << 10

// tlsBursts are what one read event brings: record plaintext sizes.
var tlsBursts = []struct {
	name    string
	records []int
}{
	{"idle-ping", []int{80}}, // a ping or its echo
	{"draw-64K", []int{tlsRecord, tlsRecord, tlsRecord, tlsRecord}}, // a 64 KiB draw
}

var tlsPlain = make([]byte, tlsRecord)

func BenchmarkPoolTLSPlain(b *testing.B) {
	for _, burst := range tlsBursts {
		b.Run(burst.name+"/syncpool", func(b *testing.B) {
			pool := sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
			var kept keptMeter[*[]byte]
			b.ReportAllocs()
			for b.Loop() {
				pooled := pool.Get().(*[]byte)
				kept.got(pooled)
				in := (*pooled)[:0]
				for _, n := range burst.records {
					if cap(in)-len(in) < tlsRecord { // grow, as tlsConn.grow
						bigger := make([]byte, len(in), 2*cap(in)+tlsRecord)
						copy(bigger, in)
						in = bigger
					}
					in = append(in, tlsPlain[:n]...) // tls.Conn.Read
				}
				sinkWrite(in) // the relay consumes it
				*pooled = (*pooled)[:0]
				kept.put(pooled, cap(*pooled))
				pool.Put(pooled) // putBack
			}
			kept.report(b)
		})
		// bbp as putBack would use it (length 0 at Put), and with the
		// length used: bytebufferpool calibrates on the length at Put.
		for _, lenAtPut := range []string{"len0", "lenused"} {
			b.Run(burst.name+"/bbp-"+lenAtPut, func(b *testing.B) {
				var pool bytebufferpool.Pool
				var kept keptMeter[*bytebufferpool.ByteBuffer]
				b.ReportAllocs()
				for b.Loop() {
					bb := pool.Get()
					kept.got(bb)
					in := bb.B[:0]
					for _, n := range burst.records {
						if cap(in)-len(in) < tlsRecord {
							bigger := make([]byte, len(in), 2*cap(in)+tlsRecord)
							copy(bigger, in)
							in = bigger
						}
						in = append(in, tlsPlain[:n]...)
					}
					sinkWrite(in)
					bb.B = in
					if lenAtPut == "len0" {
						bb.B = in[:0]
					}
					kept.put(bb, cap(bb.B))
					pool.Put(bb)
				}
				kept.report(b)
			})
		}
	}
}

// tlsWritevs are the pieces of one relay Writev.
var tlsWritevs = []struct {
	name   string
	pieces []int
}{
	{"ping", []int{8, 60}},                   // header and a small main packet
	{"draw-64K", []int{8, 150, 8, 64 << 10}}, // main packet, then its pixel chunk
	{"draws-4x64K", []int{8, 150, 8, 64 << 10, 8, 150, 8, 64 << 10, 8, 150, 8, 64 << 10, 8, 150, 8, 64 << 10}},
}

var tlsPieceData = make([]byte, 64<<10)

func BenchmarkPoolTLSGather(b *testing.B) {
	const chunk = 64 << 10
	for _, wv := range tlsWritevs {
		b.Run(wv.name+"/syncpool", func(b *testing.B) {
			pool := sync.Pool{New: func() any { b := make([]byte, 0, chunk); return &b }}
			var kept keptMeter[*[]byte]
			b.ReportAllocs()
			for b.Loop() {
				gp := pool.Get().(*[]byte)
				kept.got(gp)
				buf := (*gp)[:0]
				for _, n := range wv.pieces {
					p := tlsPieceData[:n]
					for len(p) > 0 { // as tlsConn.Writev
						k := min(len(p), cap(buf)-len(buf))
						buf = append(buf, p[:k]...)
						p = p[k:]
						if len(buf) == cap(buf) {
							sinkWrite(buf) // tlsConn.Write: encrypt
							buf = buf[:0]
						}
					}
				}
				if len(buf) > 0 {
					sinkWrite(buf)
				}
				*gp = buf[:0]
				kept.put(gp, cap(buf))
				pool.Put(gp)
			}
			kept.report(b)
		})
		b.Run(wv.name+"/bbp", func(b *testing.B) {
			// The same with a buffer that grows by append up to the chunk
			// (a bbp buffer may be smaller than 64 KiB), put back with the
			// length it reached.
			var pool bytebufferpool.Pool
			var kept keptMeter[*bytebufferpool.ByteBuffer]
			b.ReportAllocs()
			for b.Loop() {
				bb := pool.Get()
				kept.got(bb)
				buf, high := bb.B[:0], 0
				for _, n := range wv.pieces {
					p := tlsPieceData[:n]
					for len(p) > 0 {
						k := min(len(p), chunk-len(buf))
						buf = append(buf, p[:k]...)
						p = p[k:]
						if len(buf) == chunk {
							sinkWrite(buf)
							high, buf = chunk, buf[:0]
						}
					}
				}
				if len(buf) > 0 {
					sinkWrite(buf)
				}
				bb.B = buf[:max(high, len(buf))]
				kept.put(bb, cap(bb.B))
				pool.Put(bb)
			}
			kept.report(b)
		})
	}
}
