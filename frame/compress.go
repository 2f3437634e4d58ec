package frame

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// lz4MaxRatio bounds how much one LZ4 block can expand: a match of length
// 255 per byte of input at most. A declared size beyond it is a lie, caught
// before allocating.
const lz4MaxRatio = 255

// Decompress returns the decompressed payload of a frame whose compression
// byte is c. It never returns or allocates more than limit bytes (limit ≤ 0
// means AbsMaxPacketSize): lz4's declared size is checked before
// allocating, and streams are read through a bound.
func Decompress(c Compression, src []byte, limit int) ([]byte, error) {
	if limit <= 0 {
		limit = AbsMaxPacketSize
	}
	if !c.Compressed() {
		return src, nil
	}
	var (
		out []byte
		err error
	)
	switch c.Algo() {
	case AlgoLZ4:
		out, err = decompressLZ4(src, limit)
	case AlgoZlib:
		out, err = decompressZlib(src, limit)
	case AlgoBrotli:
		out, err = decompressBrotli(src, limit)
	case AlgoZstd:
		out, err = decompressZstd(src, limit)
	default:
		return nil, fmt.Errorf("frame: invalid compression: %s is not supported", c.Algo().name())
	}
	if err != nil {
		return nil, fmt.Errorf("frame: %s packet decompression failed: %w", c.Algo().name(), err)
	}
	return out, nil
}

func decompressLZ4(src []byte, limit int) ([]byte, error) {
	if len(src) < 4 {
		return nil, fmt.Errorf("%d bytes: no size prefix", len(src))
	}
	n := int64(binary.LittleEndian.Uint32(src))
	if n > int64(limit) {
		return nil, fmt.Errorf("declared size %d over the limit %d: %w", n, limit, ErrTooLarge)
	}
	if n > int64(len(src)-4)*lz4MaxRatio+16 {
		return nil, fmt.Errorf("declared size %d impossible for %d compressed bytes", n, len(src)-4)
	}
	out := make([]byte, n)
	m, err := lz4.UncompressBlock(src[4:], out)
	if err != nil {
		return nil, err
	}
	if int64(m) != n {
		return nil, fmt.Errorf("decompressed %d bytes, expected %d", m, n)
	}
	return out, nil
}

var zlibReaders sync.Pool // of io.ReadCloser implementing zlib.Resetter

func decompressZlib(src []byte, limit int) ([]byte, error) {
	var r io.ReadCloser
	if v := zlibReaders.Get(); v != nil {
		r = v.(io.ReadCloser)
		if err := r.(zlib.Resetter).Reset(bytes.NewReader(src), nil); err != nil {
			return nil, err
		}
	} else {
		var err error
		if r, err = zlib.NewReader(bytes.NewReader(src)); err != nil {
			return nil, err
		}
	}
	out, err := readBounded(r, limit, len(src))
	if err == nil {
		zlibReaders.Put(r)
	}
	return out, err
}

var brotliReaders sync.Pool // of *brotli.Reader

func decompressBrotli(src []byte, limit int) ([]byte, error) {
	r, _ := brotliReaders.Get().(*brotli.Reader)
	if r == nil {
		r = brotli.NewReader(bytes.NewReader(src))
	} else if err := r.Reset(bytes.NewReader(src)); err != nil {
		return nil, err
	}
	out, err := readBounded(r, limit, len(src))
	if err == nil {
		brotliReaders.Put(r)
	}
	return out, err
}

var zstdReaders sync.Pool // of *zstd.Decoder

func decompressZstd(src []byte, limit int) ([]byte, error) {
	// The decoder allocates the frame's window before producing output,
	// so refuse frames that declare more than the limit: an encoder sizes
	// the window to the content, which must fit the limit anyway.
	var fh zstd.Header
	if err := fh.Decode(src); err != nil {
		return nil, err
	}
	if fh.HasFCS && fh.FrameContentSize > uint64(limit) {
		return nil, fmt.Errorf("declared size %d over the limit %d: %w", fh.FrameContentSize, limit, ErrTooLarge)
	}
	if !fh.SingleSegment && fh.WindowSize > max(uint64(limit), 1<<20) {
		return nil, fmt.Errorf("window %d over the limit %d: %w", fh.WindowSize, limit, ErrTooLarge)
	}
	d, _ := zstdReaders.Get().(*zstd.Decoder)
	if d == nil {
		var err error
		d, err = zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return nil, err
		}
	} else if err := d.Reset(bytes.NewReader(src)); err != nil {
		return nil, err
	}
	out, err := readBounded(d, limit, len(src))
	if err == nil {
		// Drop the reference to src before pooling.
		_ = d.Reset(bytes.NewReader(nil))
		zstdReaders.Put(d)
	}
	return out, err
}

// readBounded reads r to EOF into a buffer that never grows past limit+1
// bytes: one byte over the limit proves the output too large.
func readBounded(r io.Reader, limit, hint int) ([]byte, error) {
	size := min(limit+1, max(512, hint*4))
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				return nil, fmt.Errorf("output over the limit %d: %w", limit, ErrTooLarge)
			}
			grown := make([]byte, len(buf), min(limit+1, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			if len(buf) > limit {
				return nil, fmt.Errorf("output over the limit %d: %w", limit, ErrTooLarge)
			}
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// Compress compresses src with algorithm c.Algo() at level c.Level() as
// xpra does and returns the compression byte to put in the header with the
// compressed payload. Level 0 or c == NoCompression returns src unchanged.
// lz4 uses the C library's fast mode with xpra's acceleration (8-2×level for
// levels 1..3), so its output is byte-identical to xpra 3.1's.
func Compress(c Compression, src []byte) (Compression, []byte, error) {
	if c == NoCompression || c.Level() == 0 {
		return NoCompression, src, nil
	}
	level := c.Level()
	switch c.Algo() {
	case AlgoLZ4:
		return AlgoLZ4 | Compression(level), compressLZ4(src, level), nil
	case AlgoZlib:
		level = min(9, level)
		var b bytes.Buffer
		w, err := zlib.NewWriterLevel(&b, level)
		if err != nil {
			return 0, nil, fmt.Errorf("frame: zlib: %w", err)
		}
		if _, err := w.Write(src); err != nil {
			return 0, nil, fmt.Errorf("frame: zlib: %w", err)
		}
		if err := w.Close(); err != nil {
			return 0, nil, fmt.Errorf("frame: zlib: %w", err)
		}
		return AlgoZlib | Compression(level), b.Bytes(), nil
	case AlgoBrotli:
		// xpra caps brotli's quality at 9 for payloads over 1 MiB.
		q := min(11, level)
		if len(src) > 1<<20 {
			q = min(9, q)
		}
		var b bytes.Buffer
		w := brotli.NewWriterLevel(&b, q)
		if _, err := w.Write(src); err != nil {
			return 0, nil, fmt.Errorf("frame: brotli: %w", err)
		}
		if err := w.Close(); err != nil {
			return 0, nil, fmt.Errorf("frame: brotli: %w", err)
		}
		return AlgoBrotli | Compression(q), b.Bytes(), nil
	case AlgoZstd:
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
			zstd.WithEncoderConcurrency(1))
		if err != nil {
			return 0, nil, fmt.Errorf("frame: zstd: %w", err)
		}
		out := e.EncodeAll(src, nil)
		_ = e.Close()
		return AlgoZstd | Compression(level), out, nil
	}
	return 0, nil, fmt.Errorf("frame: compression %s is not supported", c.Algo().name())
}

// AppendCompress is Compress appending its output to dst. lz4 (every
// bridged or recompressed link's compressor) compresses straight into
// dst's spare room: no buffer of its own, pooled or not (docs/memory.md,
// "Pooled buffers"). src may be a part of dst before len(dst); on error
// dst is returned as it was.
func AppendCompress(dst []byte, c Compression, src []byte) (Compression, []byte, error) {
	if c != NoCompression && c.Level() > 0 && c.Algo() == AlgoLZ4 {
		return AlgoLZ4 | Compression(c.Level()), appendLZ4(dst, src, c.Level()), nil
	}
	c, data, err := Compress(c, src)
	if err != nil {
		return 0, dst, err
	}
	return c, append(dst, data...), nil
}

// compressLZ4 writes xpra's lz4 format: the uncompressed size as a
// little-endian uint32, then one raw LZ4 block.
func compressLZ4(src []byte, level int) []byte { return appendLZ4(nil, src, level) }

// appendLZ4 appends compressLZ4's output to dst. src must not overlap
// dst's spare capacity (a part of dst[:len(dst)] is fine).
func appendLZ4(dst, src []byte, level int) []byte {
	start := len(dst)
	dst = slices.Grow(dst, 4+lz4.CompressBlockBound(len(src)))
	out := dst[start : start+4+lz4.CompressBlockBound(len(src))]
	binary.LittleEndian.PutUint32(out, uint32(len(src)))
	var n int
	if level >= 7 {
		c := lz4.CompressorHC{Level: lz4.CompressionLevel(1 << (8 + level))}
		n, _ = c.CompressBlock(src, out[4:])
	} else {
		accel := 1
		if level <= 3 {
			accel = 8 - 2*level
		}
		c := lz4.CompressorCCompat{Acceleration: accel}
		n, _ = c.CompressBlock(src, out[4:])
	}
	if n == 0 {
		// Empty input (C LZ4 writes one zero token) or a library refusal:
		// a literal-only block is valid for every decoder.
		n = storeLZ4Literals(src, out[4:])
	}
	return dst[:start+4+n]
}

// storeLZ4Literals encodes src as one literal-only LZ4 sequence, valid for
// every LZ4 decoder (the last sequence of a block has no match).
func storeLZ4Literals(src, dst []byte) int {
	n := len(src)
	i := 0
	if n < 15 {
		dst[0] = byte(n << 4)
		i = 1
	} else {
		dst[0] = 0xf0
		i = 1
		rest := n - 15
		for rest >= 255 {
			dst[i] = 255
			i++
			rest -= 255
		}
		dst[i] = byte(rest)
		i++
	}
	return i + copy(dst[i:], src)
}
