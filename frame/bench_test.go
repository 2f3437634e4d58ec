package frame

import (
	"bytes"
	"testing"
)

// Benchmarks for the parse and encode paths. b.SetBytes makes `go test
// -bench` report MB/s; b.ReportAllocs reports allocs/op.

func benchHello(b *testing.B) []byte {
	return readGolden(b, "rencode/hello.bin")
}

func BenchmarkFrameLen(b *testing.B) {
	hdr := Header{Flags: FlagRencode, Compression: AlgoLZ4 | 1, Size: 65536}.Append(nil)
	b.ReportAllocs()
	b.SetBytes(HeaderSize)
	for b.Loop() {
		if _, _, err := FrameLen(hdr, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func benchPeek(b *testing.B, c Compression) {
	w := Writer{Encoding: Rencode, Compression: c, MinCompressSize: 1}
	frames, _ := w.AppendPacket(nil, Packet{"draw", 1, 0, 0, 200, 75, "rgb24", pattern(20000, 1), 7, 800, Dict{}})
	// The main frame comes last, after any raw chunk.
	var h Header
	var payload []byte
	for buf := frames; len(buf) > 0; {
		n, fh, _ := FrameLen(buf, 0)
		h, payload, buf = fh, buf[HeaderSize:n], buf[n:]
	}
	b.ReportAllocs()
	b.SetBytes(int64(HeaderSize + len(payload)))
	for b.Loop() {
		typ, err := PeekType(h, payload)
		if err != nil || !typ.Is("draw") {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeekType(b *testing.B)    { benchPeek(b, NoCompression) }
func BenchmarkPeekTypeLZ4(b *testing.B) { benchPeek(b, AlgoLZ4|1) }

func benchDecode(b *testing.B, enc Encoding, data []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := enc.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRencodeHello(b *testing.B) { benchDecode(b, Rencode, benchHello(b)) }
func BenchmarkDecodeBencodeHello(b *testing.B) {
	benchDecode(b, Bencode, readGolden(b, "bencode/hello.bin"))
}
func BenchmarkDecodeCaptureHello(b *testing.B) {
	// The real 3.1.3 client hello from the capture (224 keys).
	data := readGoldenDir(b, "capture", "c2s.bin")
	n, h, _ := FrameLen(data, AbsMaxPacketSize)
	raw, _ := Decompress(h.Compression, data[HeaderSize:n], 0)
	benchDecode(b, Rencode, raw)
}

func BenchmarkEncodeRencodeHello(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchHello(b))))
	buf := make([]byte, 0, 4096)
	for b.Loop() {
		var err error
		if buf, err = Rencode.Append(buf[:0], goldenHello); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeRencodePlusHello(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 4096)
	buf, _ = RencodePlus.Append(buf, goldenHello)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		var err error
		if buf, err = RencodePlus.Append(buf[:0], goldenHello); err != nil {
			b.Fatal(err)
		}
	}
}

// A draw packet with 60 KB of pixels in a raw chunk: the common case on
// the wire.
func benchDrawStream(b *testing.B, c Compression) []byte {
	w := Writer{Encoding: Rencode, Compression: c}
	var stream []byte
	for range 16 {
		stream, _ = w.AppendPacket(stream, Packet{"draw", 1, 0, 0, 200, 75, "rgb24",
			Compressed{Data: pattern(60000, 7)}, 7, 800, Dict{{"lz4", 1}}})
	}
	return stream
}

func BenchmarkReaderDrawStream(b *testing.B) {
	stream := benchDrawStream(b, AlgoLZ4|1)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		var r Reader
		for buf := stream; len(buf) > 0; {
			_, n, err := r.Next(buf)
			if err != nil {
				b.Fatal(err)
			}
			buf = buf[n:]
		}
	}
}

// Walking frame boundaries only, as a pass-through relay does.
func BenchmarkFrameWalkDrawStream(b *testing.B) {
	stream := benchDrawStream(b, AlgoLZ4|1)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		for buf := stream; len(buf) > 0; {
			n, h, err := FrameLen(buf, 0)
			if err != nil {
				b.Fatal(err)
			}
			if h.Index == 0 {
				if typ, err := PeekType(h, buf[HeaderSize:n]); err != nil || !typ.Is("draw") {
					b.Fatal(err)
				}
			}
			buf = buf[n:]
		}
	}
}

func BenchmarkWriterDraw(b *testing.B) {
	w := Writer{Encoding: Rencode, Compression: AlgoLZ4 | 1}
	p := Packet{"draw", 1, 0, 0, 200, 75, "rgb24", Compressed{Data: pattern(60000, 7)}, 7, 800, Dict{{"lz4", 1}}}
	buf, _ := w.AppendPacket(nil, p)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		var err error
		if buf, err = w.AppendPacket(buf[:0], p); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecompress(b *testing.B, c Compression) {
	raw := bytes.Repeat(pattern(4096, 9), 16)
	c, comp, _ := Compress(c, raw)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Decompress(c, comp, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecompressLZ4(b *testing.B)    { benchDecompress(b, AlgoLZ4|1) }
func BenchmarkDecompressZlib(b *testing.B)   { benchDecompress(b, AlgoZlib|1) }
func BenchmarkDecompressBrotli(b *testing.B) { benchDecompress(b, AlgoBrotli|3) }
func BenchmarkDecompressZstd(b *testing.B)   { benchDecompress(b, AlgoZstd|3) }

func BenchmarkCompressLZ4(b *testing.B) {
	raw := bytes.Repeat(pattern(4096, 9), 16)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		Compress(AlgoLZ4|1, raw)
	}
}
