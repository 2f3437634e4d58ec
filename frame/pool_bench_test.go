package frame

import (
	"bytes"
	"sync"
	"testing"

	"github.com/valyala/bytebufferpool"
)

// BenchmarkPoolCompress compares, for docs/memory.md "Pooled buffers",
// where Writer.AppendPacket puts the lz4 output of a main packet or a
// chunk before it lands in the frame buffer: a fresh buffer per call (as
// Compress did), a 64 KiB sync.Pool scratch, a bytebufferpool scratch,
// or dst itself (AppendCompress, what the Writer does now). The frame
// buffer dst is reused across iterations, as the relay's pooled encode
// buffer is.
//
//	go test -run '^$' -bench 'PoolCompress' -benchmem -count=5 ./frame/
func BenchmarkPoolCompress(b *testing.B) {
	sizes := []struct {
		name string
		src  []byte
	}{
		{"main-2K", pixelsLike(2 << 10)},    // a main packet with small inline pixels
		{"chunk-30K", pixelsLike(30 << 10)}, // a large []byte argument: a chunk
		{"hello-67K", bytes.Repeat(pattern(4096, 3), 17)},
	}
	c := AlgoLZ4.WithLevel(1)
	for _, sz := range sizes {
		dst := make([]byte, 0, 256<<10)
		b.Run(sz.name+"/alloc", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				cc, data, _ := Compress(c, sz.src)
				dst = appendFrame(dst[:0], Header{Compression: cc}, data)
			}
		})
		b.Run(sz.name+"/syncpool", func(b *testing.B) {
			pool := sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
			b.ReportAllocs()
			for b.Loop() {
				bp := pool.Get().(*[]byte)
				*bp = appendLZ4((*bp)[:0], sz.src, c.Level())
				dst = appendFrame(dst[:0], Header{Compression: c}, *bp)
				if cap(*bp) <= 1<<20 {
					*bp = (*bp)[:0]
					pool.Put(bp)
				}
			}
		})
		b.Run(sz.name+"/bbp", func(b *testing.B) {
			var pool bytebufferpool.Pool
			b.ReportAllocs()
			for b.Loop() {
				bb := pool.Get()
				bb.B = appendLZ4(bb.B[:0], sz.src, c.Level())
				dst = appendFrame(dst[:0], Header{Compression: c}, bb.B)
				pool.Put(bb)
			}
		})
		b.Run(sz.name+"/into-dst", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				cc, out, _ := AppendCompress(append(dst[:0], make([]byte, HeaderSize)...), c, sz.src)
				Header{Compression: cc, Size: uint32(len(out) - HeaderSize)}.Put(out)
				dst = out
			}
		})
	}
}

// pixelsLike is incompressible data, as encoded pictures are.
func pixelsLike(n int) []byte {
	b := make([]byte, n)
	x := uint32(12345)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// TestAppendCompressMatchesCompress: compressing into dst yields the
// bytes Compress does, for every algorithm, after whatever dst held, and
// with src inside dst (the main packet's body).
func TestAppendCompressMatchesCompress(t *testing.T) {
	for _, c := range []Compression{AlgoLZ4 | 1, AlgoLZ4 | 7, AlgoZlib | 1, NoCompression} {
		for _, src := range [][]byte{nil, []byte("x"), pattern(5000, 1), pixelsLike(3000)} {
			wantC, want, err := Compress(c, src)
			if err != nil {
				t.Fatal(err)
			}
			prefix := []byte("prefix")
			gotC, got, err := AppendCompress(append([]byte(nil), prefix...), c, src)
			if err != nil || gotC != wantC || !bytes.Equal(got, append(prefix, want...)) {
				t.Errorf("%v, %d bytes: %v %v, %d bytes, want %v, %d", c, len(src), err, gotC, len(got), wantC, len(want)+len(prefix))
			}
			inside := append(append([]byte(nil), prefix...), src...)
			_, got, _ = AppendCompress(inside, c, inside[len(prefix):])
			if !bytes.Equal(got[len(inside):], want) {
				t.Errorf("%v, %d bytes, src inside dst: output differs", c, len(src))
			}
		}
	}
}
