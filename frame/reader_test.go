package frame

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// feeder mimics a relay on a non-blocking socket: bytes arrive in pieces,
// the caller offers what it has buffered and discards what was consumed.
// It checks that Reader never needs more than the current frame buffered.
func feedInPieces(t *testing.T, stream []byte, rng *rand.Rand, maxPiece int) []Packet {
	t.Helper()
	var (
		r       Reader
		buf     []byte
		packets []Packet
	)
	for len(stream) > 0 || len(buf) > 0 {
		if len(stream) > 0 {
			n := min(len(stream), 1+rng.IntN(maxPiece))
			buf = append(buf, stream[:n]...)
			stream = stream[n:]
		}
		for {
			p, n, err := r.Next(buf)
			if errors.Is(err, ErrShortBuffer) {
				// Everything buffered belongs to one incomplete frame.
				if size, _, err := FrameLen(buf, 0); err == nil && len(buf) >= size {
					t.Fatalf("short buffer with a whole frame buffered")
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			buf = buf[n:]
			if p != nil {
				packets = append(packets, p)
			}
		}
		if len(stream) == 0 && len(buf) > 0 {
			if _, _, err := r.Next(buf); errors.Is(err, ErrShortBuffer) {
				t.Fatalf("%d bytes left over at end of stream", len(buf))
			}
		}
	}
	return packets
}

func samplePackets() []Packet {
	return []Packet{
		{"hello", goldenHello},
		{"draw", 1, 0, 0, 200, 75, "rgb24", Compressed{Data: pattern(60000, 7)}, 7, 800, Dict{{"lz4", 1}}},
		{"ping", 1, 2, "x"},
		{"clipboard-contents", 4, "CLIPBOARD", "UTF8_STRING", 8, "bytes", pattern(9000, 5)},
		{"disconnect", "done"},
	}
}

func TestReaderPartialInput(t *testing.T) {
	for _, w := range []Writer{
		{Encoding: Rencode, Compression: AlgoLZ4 | 1},
		{Encoding: Bencode, Compression: AlgoZlib | 1},
		{Encoding: RencodePlus, Compression: AlgoBrotli | 3},
		{Encoding: RencodePlus, Compression: AlgoZstd | 3},
		{Encoding: Rencode},
	} {
		var stream []byte
		for _, p := range samplePackets() {
			var err error
			if stream, err = w.AppendPacket(stream, p); err != nil {
				t.Fatal(err)
			}
		}
		// Whole stream at once, then byte by byte, then random pieces.
		whole := feedInPieces(t, stream, rand.New(rand.NewPCG(1, 2)), len(stream))
		if len(whole) != len(samplePackets()) {
			t.Fatalf("%s/%s: %d packets", w.Encoding, w.Compression, len(whole))
		}
		for _, maxPiece := range []int{1, 7, 1500, 65536} {
			got := feedInPieces(t, stream, rand.New(rand.NewPCG(3, uint64(maxPiece))), maxPiece)
			if len(got) != len(whole) {
				t.Fatalf("pieces of %d: %d packets, want %d", maxPiece, len(got), len(whole))
			}
			for i := range got {
				if !Equal([]any(got[i]), []any(whole[i])) {
					t.Fatalf("pieces of %d: packet %d differs", maxPiece, i)
				}
			}
		}
		// The blocking reader agrees, through a reader that returns one
		// byte at a time.
		sr := NewStreamReader(io.MultiReader(oneByteReader{bytes.NewReader(stream)}), 0)
		for i := range whole {
			p, err := sr.ReadPacket()
			if err != nil || !Equal([]any(p), []any(whole[i])) {
				t.Fatalf("StreamReader packet %d: %v", i, err)
			}
		}
		if _, err := sr.ReadPacket(); err != io.EOF {
			t.Fatalf("end of stream: %v", err)
		}
	}
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestStreamReaderTruncated(t *testing.T) {
	w := Writer{Encoding: Rencode}
	stream, _ := w.AppendPacket(nil, samplePackets()[1])
	for _, cut := range []int{3, HeaderSize + 10, len(stream) - 1} {
		sr := NewStreamReader(bytes.NewReader(stream[:cut]), 0)
		if _, err := sr.ReadPacket(); err != io.ErrUnexpectedEOF {
			t.Errorf("cut at %d: %v", cut, err)
		}
	}
}

func TestPeekType(t *testing.T) {
	for _, w := range []Writer{
		{Encoding: Rencode},
		{Encoding: Rencode, Compression: AlgoLZ4 | 1, MinCompressSize: 1},
		{Encoding: RencodePlus, Compression: AlgoLZ4 | 9, MinCompressSize: 1},
		{Encoding: Bencode, Compression: AlgoZlib | 1, MinCompressSize: 1},
		{Encoding: RencodePlus, Compression: AlgoBrotli | 1, MinCompressSize: 1},
		{Encoding: RencodePlus, Compression: AlgoZstd | 1, MinCompressSize: 1},
	} {
		for _, p := range append(samplePackets(), Packet{int64(35), 1, 2}, Packet{int64(300), "x"},
			Packet{"configure-override-redirect-with-a-long-name-but-under-64", 1}) {
			frames, err := w.AppendPacket(nil, p)
			if err != nil {
				t.Fatal(err)
			}
			fs := splitFrames(t, frames)
			last := fs[len(fs)-1]
			typ, err := PeekType(last.h, last.payload)
			if err != nil {
				t.Fatalf("%s %s: %v", w.Compression, p, err)
			}
			if a, ok := p.Alias(); ok {
				if got, isAlias := typ.Alias(); !isAlias || got != a {
					t.Errorf("alias %d peeked as %v", a, typ)
				}
				continue
			}
			if !typ.Is(p.Type()) || typ.Name() != p.Type() {
				t.Errorf("%s/%s: peeked %q, want %q", w.Encoding, w.Compression, typ.Name(), p.Type())
			}
		}
	}
	// No allocation for uncompressed and lz4 payloads.
	for _, c := range []Compression{NoCompression, AlgoLZ4 | 1} {
		w := Writer{Encoding: Rencode, Compression: c, MinCompressSize: 1}
		frames, _ := w.AppendPacket(nil, Packet{"draw", 1, 2, 3, pattern(20000, 1)})
		fs := splitFrames(t, frames)
		last := fs[len(fs)-1]
		ok := true
		if n := testing.AllocsPerRun(100, func() {
			typ, err := PeekType(last.h, last.payload)
			ok = ok && err == nil && typ.Is("draw")
		}); n != 0 || !ok {
			t.Errorf("%s: PeekType allocates %v times (peeked ok: %v)", c, n, ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		_, _, _ = FrameLen([]byte{'P', 1, 0, 0, 0, 0, 1, 0}, 0)
	}); n != 0 {
		t.Errorf("FrameLen allocates %v times", n)
	}
}

// xpra servers refuse an unusable hello with a line of text, no header:
// the reader returns it whole (3.1.3's and 6.5's words).
func TestStreamReaderTextRefusal(t *testing.T) {
	for _, line := range []string{
		"disconnect invalid compression: zlib is not available",
		"disconnect: invalid packet format, failed to parse bencode packet",
		"short",
	} {
		r := NewStreamReader(strings.NewReader(line+"\n"), 0)
		_, err := r.ReadPacket()
		var te *TextError
		if !errors.As(err, &te) || te.Line != line {
			t.Errorf("%q: got %v", line, err)
		}
	}
	// Binary garbage stays a header error.
	_, err := NewStreamReader(strings.NewReader("\x01\x02\x03\x04\x05\x06\x07\x08\x09"), 0).ReadPacket()
	var he *HeaderError
	if !errors.As(err, &he) {
		t.Errorf("binary garbage: %v", err)
	}
	// An endless line is cut at MaxTextLine.
	_, err = NewStreamReader(strings.NewReader(strings.Repeat("x", 10*MaxTextLine)), 0).ReadPacket()
	var te *TextError
	if !errors.As(err, &te) || len(te.Line) != MaxTextLine {
		t.Errorf("long line: %v", err)
	}
}
