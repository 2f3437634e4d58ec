package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zlib"
)

// allocated runs f and returns the bytes it allocated on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

const testLimit = 1 << 20

func TestHeaderDeclaring4GiB(t *testing.T) {
	hdr := Header{Flags: FlagRencode, Size: 0xFFFFFFFF}.Append(nil)
	var err error
	n := allocated(func() {
		r := Reader{MaxPacketSize: testLimit}
		_, _, err = r.Next(append(hdr, "xx"...))
	})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("4 GiB header: err = %v, want ErrTooLarge", err)
	}
	var he *HeaderError
	if !errors.As(err, &he) || !strings.Contains(he.Reason, "maximum allowed") {
		t.Fatalf("reason not suitable for a disconnect: %v", err)
	}
	if n > 64<<10 {
		t.Fatalf("rejecting the header allocated %d bytes", n)
	}
	// The blocking reader must refuse before reading the payload.
	sr := NewStreamReader(bytes.NewReader(hdr), testLimit)
	if _, err := sr.ReadPacket(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("StreamReader: %v", err)
	}
}

func TestLZ4SizeBomb(t *testing.T) {
	// A real bomb: 64 MiB of zeros compress to about 250 KiB.
	_, bomb, _ := Compress(AlgoLZ4|1, make([]byte, 64<<20))
	// And a liar: a declared 4 GiB in front of a tiny block.
	liar := binary.LittleEndian.AppendUint32(nil, 0xFFFFFFFF)
	liar = append(liar, 0x10, 'a')
	for name, payload := range map[string][]byte{"bomb": bomb, "liar": liar} {
		t.Run(name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = Decompress(AlgoLZ4|1, payload, testLimit) })
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if n > testLimit {
				t.Fatalf("allocated %d bytes, limit %d", n, testLimit)
			}
			// Through the packet reader as a main packet and as a chunk.
			for _, idx := range []uint8{0, 1} {
				h := Header{Compression: AlgoLZ4 | 1, Index: idx}
				if idx == 0 {
					h.Flags = FlagRencode
				}
				frame := appendFrame(nil, h, payload)
				r := Reader{MaxPacketSize: testLimit}
				if _, _, err := r.Next(frame); !errors.Is(err, ErrTooLarge) {
					t.Fatalf("index %d through Reader: %v", idx, err)
				}
			}
		})
	}
	// The lz4 ratio check catches a size no block of that length can reach.
	small := binary.LittleEndian.AppendUint32(nil, 1000)
	if _, err := Decompress(AlgoLZ4|1, append(small, 0x10, 'a'), testLimit); err == nil {
		t.Fatal("impossible declared size accepted")
	}
}

func TestStreamBombs(t *testing.T) {
	zeros := make([]byte, 32<<20)
	var zb bytes.Buffer
	w, _ := zlib.NewWriterLevel(&zb, 9)
	w.Write(zeros)
	w.Close()
	_, br, _ := Compress(AlgoBrotli|5, zeros)
	_, zs, _ := Compress(AlgoZstd|3, zeros)
	for name, tc := range map[string]struct {
		c Compression
		p []byte
	}{"zlib": {AlgoZlib | 9, zb.Bytes()}, "brotli": {AlgoBrotli | 5, br}, "zstd": {AlgoZstd | 3, zs}} {
		t.Run(name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = Decompress(tc.c, tc.p, testLimit) })
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			// Decoder state (zstd's window, brotli's ring) is allocated
			// too; the output buffer itself stops at limit+1.
			if n > 3*testLimit+(8<<20) {
				t.Fatalf("allocated %d bytes for a %d limit", n, testLimit)
			}
			if out, err := Decompress(tc.c, tc.p, len(zeros)); err != nil || len(out) != len(zeros) {
				t.Fatalf("exact limit: %d bytes, %v", len(out), err)
			}
		})
	}
}

func TestDeepNesting(t *testing.T) {
	const depth = 1_000_000
	cases := map[Encoding][]byte{
		Rencode:     bytes.Repeat([]byte{rListFix + 1}, depth),
		RencodePlus: bytes.Repeat([]byte{rList}, depth),
		Bencode:     bytes.Repeat([]byte{'l'}, depth),
	}
	for enc, data := range cases {
		var err error
		n := allocated(func() { _, err = enc.Decode(data) })
		var de *DecodeError
		if !errors.As(err, &de) || !strings.Contains(de.Reason, "nesting") {
			t.Errorf("%s: %d-deep list: err = %v", enc, depth, err)
		}
		if n > 1<<20 {
			t.Errorf("%s: allocated %d bytes", enc, n)
		}
	}
	// Encoding refuses too: a self-referencing structure cannot hang us.
	l := []any{nil}
	l[0] = l
	if _, err := Rencode.Append(nil, l); err == nil {
		t.Error("encoded a cyclic list")
	}
}

func TestLyingLengths(t *testing.T) {
	for enc, data := range map[Encoding]string{
		Rencode:     "999999999:x",
		RencodePlus: "4294967295/x",
		Bencode:     "999999999:x",
	} {
		if _, err := enc.Decode([]byte(data)); err == nil {
			t.Errorf("%s accepted %q", enc, data)
		}
	}
	// A 63-item list marker with nothing behind it must not allocate 63
	// slots per level, and a huge declared count fails on the data.
	if _, err := Rencode.Decode(bytes.Repeat([]byte{0xff}, 60)); err == nil {
		t.Error("truncated fixed lists accepted")
	}
}

func TestHeaderChecks(t *testing.T) {
	good := Header{Flags: FlagRencode, Compression: AlgoLZ4 | 1, Size: 10}
	if err := good.Check(0); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]Header{
		"unknown flag":     {Flags: 0x40, Size: 1},
		"two encoders":     {Flags: FlagRencode | FlagRencodePlus, Size: 1},
		"no level":         {Compression: AlgoLZ4, Size: 1},
		"two compressors":  {Compression: AlgoLZ4 | AlgoBrotli | 1, Size: 1},
		"encoder on chunk": {Flags: FlagRencode, Index: 1, Size: 1},
		"index 16":         {Index: 16, Size: 1},
		"over abs max":     {Size: AbsMaxPacketSize + 1},
	} {
		if err := h.Check(0); err == nil {
			t.Errorf("%s: %v accepted", name, h)
		}
	}
	if _, err := ParseHeader([]byte("GET / HT")); err == nil || !strings.Contains(err.Error(), "0x47") {
		t.Errorf("HTTP bytes: %v", err)
	}
	if _, err := ParseHeader([]byte{'P', 1, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Error("zero size accepted")
	}
	if _, err := ParseHeader([]byte("P")); !errors.Is(err, ErrShortBuffer) {
		t.Errorf("short header: %v", err)
	}
	if _, _, err := FrameLen(Header{Flags: FlagCipher, Size: 5}.Append(nil), 0); !errors.Is(err, ErrEncrypted) {
		t.Errorf("cipher flag: %v", err)
	}
	var b [8]byte
	good.Put(b[:])
	if h, _ := ParseHeader(b[:]); h != good || !bytes.Equal(b[:], good.Append(nil)) {
		t.Errorf("Put/Append/ParseHeader disagree: %v", h)
	}
}

func TestChunkRules(t *testing.T) {
	chunk := func(i uint8) []byte { return appendFrame(nil, Header{Index: i}, []byte("data")) }
	var r Reader
	if _, _, err := r.Next(chunk(1)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Next(chunk(1)); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate chunk: %v", err)
	}
	r = Reader{}
	for i := uint8(1); i <= 3; i++ {
		if _, _, err := r.Next(chunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := r.Next(chunk(4)); err == nil || !strings.Contains(err.Error(), "too many") {
		t.Errorf("4th chunk: %v", err)
	}
	// A chunk index beyond the main packet's length.
	r = Reader{}
	r.Next(chunk(5))
	main, _ := (&Writer{Encoding: Rencode}).AppendPacket(nil, Packet{"draw", 1})
	if _, _, err := r.Next(main); err == nil {
		t.Error("chunk index beyond the packet accepted")
	}
	if r.Pending() != 0 {
		t.Error("chunks kept after their main packet")
	}
	// Before login no chunk is held, compressed or not: a zlib bomb in a
	// chunk is refused before it is inflated.
	var bomb bytes.Buffer
	zw := zlib.NewWriter(&bomb)
	zw.Write(make([]byte, 16<<20))
	zw.Close()
	nc := Reader{NoChunks: true}
	var err error
	n := allocated(func() {
		_, _, err = nc.Next(appendFrame(nil, Header{Index: 1, Compression: AlgoZlib | 9}, bomb.Bytes()))
	})
	if err == nil || nc.Pending() != 0 {
		t.Errorf("NoChunks reader took a chunk: %v", err)
	}
	if n > 64<<10 {
		t.Errorf("refusing a chunk allocated %d bytes", n)
	}
	// A main packet that is not a list.
	notList, _ := Rencode.Append(nil, "x")
	if _, _, err := (&Reader{}).Next(appendFrame(nil, Header{Flags: FlagRencode}, notList)); err == nil {
		t.Error("non-list packet accepted")
	}
}

// A list of small integers decodes to 16 bytes per byte received: with a
// value limit it stops there, and a real hello (about 6,000 values) fits.
func TestDecodeValueLimit(t *testing.T) {
	wide := append([]byte{0x3b}, bytes.Repeat([]byte{0x01}, 250_000)...)
	wide = append(wide, 0x7f)
	for _, e := range []Encoding{Rencode, RencodePlus} {
		if _, err := e.DecodeLimited(wide, 1<<16); err == nil || !strings.Contains(err.Error(), "too many values") {
			t.Errorf("%v: wide list: %v", e, err)
		}
		if v, err := e.DecodeLimited(wide, 0); err != nil || len(v.([]any)) != 250_000 {
			t.Errorf("%v: unlimited: %v", e, err)
		}
	}
	ben := []byte("l" + strings.Repeat("i1e", 100) + "e")
	if _, err := Bencode.DecodeLimited(ben, 50); err == nil {
		t.Error("bencode: over the limit")
	}
	if _, err := Bencode.DecodeLimited(ben, 101); err != nil {
		t.Errorf("bencode: at the limit: %v", err)
	}
}
