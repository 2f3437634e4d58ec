package frame

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Fuzz targets: malformed input must return an error, never panic, and
// never allocate past the limits (Go's fuzzer reports an out-of-memory
// crash as a failure). Each seeds from the golden fixtures and the capture.

// Small, so that inputs inflating to the limit stay fast under the fuzzer's
// coverage instrumentation (the bound is what matters, not its size).
const fuzzLimit = 256 << 10

func addGoldenSeeds(f *testing.F, pattern string) { addSeedsUpTo(f, pattern, 64<<10) }

// addSeedsUpTo adds fixture files no larger than limit: the stream
// decompressors crawl under the fuzzer's instrumentation on 50 KB seeds.
func addSeedsUpTo(f *testing.F, pattern string, limit int) {
	files, _ := filepath.Glob(filepath.Join("testdata", pattern))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil && len(b) <= limit {
			f.Add(b)
		}
	}
}

func FuzzReader(f *testing.F) {
	addGoldenSeeds(f, "golden/packets/*.bin")
	for _, name := range []string{"c2s.bin", "s2c.bin"} {
		if b, err := os.ReadFile(filepath.Join("testdata", "capture", name)); err == nil {
			f.Add(b[:min(len(b), 32<<10)])
		}
	}
	f.Add([]byte("PPPPPPPP"))
	f.Add(Header{Flags: FlagRencode, Size: 0xFFFFFFFF}.Append(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := Reader{MaxPacketSize: fuzzLimit}
		buf := data
		for len(buf) > 0 {
			p, n, err := r.Next(buf)
			if err != nil {
				if n == 0 && !errors.Is(err, ErrShortBuffer) {
					if size, _, ferr := FrameLen(buf, fuzzLimit); ferr == nil && size > len(buf) {
						t.Fatalf("error %v for an incomplete frame", err)
					}
				}
				return
			}
			if n <= 0 || n > len(buf) {
				t.Fatalf("consumed %d of %d", n, len(buf))
			}
			if p != nil {
				if len(p) == 0 {
					t.Fatal("empty packet returned")
				}
				// Anything decoded can be written again.
				w := Writer{Encoding: r.Header().Flags.Encoding()}
				if w.Encoding == Bencode && !bencodable(p) {
					buf = buf[n:]
					continue
				}
				if _, err := w.AppendPacket(nil, p); err != nil && !errors.Is(err, errNone) {
					t.Fatalf("decoded packet cannot be re-encoded: %v", err)
				}
			}
			buf = buf[n:]
		}
	})
}

var errNone = errors.New("frame: invalid None value")

// bencodable: bencode has no None or float; a Writer also rejects None
// arguments, as xpra does.
func bencodable(v any) bool {
	switch v := v.(type) {
	case nil, float32, float64:
		return false
	case Packet:
		return bencodable([]any(v))
	case []any:
		for _, x := range v {
			if !bencodable(x) {
				return false
			}
		}
	case Dict:
		for _, p := range v {
			if !bencodable(p.Key) || !bencodable(p.Value) {
				return false
			}
		}
	}
	return true
}

func fuzzDecoder(f *testing.F, enc Encoding, seeds string) {
	addGoldenSeeds(f, seeds)
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := enc.Decode(data)
		if err != nil {
			return
		}
		// A decoded value re-encodes, and decodes to itself.
		out, err := enc.Append(nil, v)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := enc.Decode(out)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if enc == Bencode {
			// bencode's "u" form decodes to text but xpra writes text
			// as plain strings, which decode to bytes.
			back, v = textAsBytes(back), textAsBytes(v)
		}
		if !Equal(back, v) {
			t.Fatalf("round trip changed the value")
		}
	})
}

func textAsBytes(v any) any {
	switch v := v.(type) {
	case string:
		return []byte(v)
	case []any:
		out := make([]any, len(v))
		for i := range v {
			out[i] = textAsBytes(v[i])
		}
		return out
	case Dict:
		out := make(Dict, len(v))
		for i, p := range v {
			out[i] = Pair{textAsBytes(p.Key), textAsBytes(p.Value)}
		}
		return out
	}
	return v
}

func FuzzRencode(f *testing.F) { fuzzDecoder(f, Rencode, "golden/rencode/*.bin") }
func FuzzRencodePlus(f *testing.F) {
	f.Add([]byte("\xc4\x85hello2/\x00\x01\x01F"))
	fuzzDecoder(f, RencodePlus, "golden/rencode/*.bin")
}
func FuzzBencode(f *testing.F) { fuzzDecoder(f, Bencode, "golden/bencode/*.bin") }

func fuzzDecompress(f *testing.F, c Compression, seeds string) {
	addSeedsUpTo(f, seeds, 4<<10)
	_, small, _ := Compress(c.WithLevel(3), bytes.Repeat([]byte("xpra "), 100))
	f.Add(small)
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Decompress(c, data, fuzzLimit)
		if err == nil && len(out) > fuzzLimit {
			t.Fatalf("%d bytes out, limit %d", len(out), fuzzLimit)
		}
		var scratch [peekPrefix]byte
		if n, err := decompressPrefix(c, data, scratch[:]); err == nil && n > len(scratch) {
			t.Fatalf("prefix of %d", n)
		}
	})
}

func FuzzLZ4(f *testing.F)    { fuzzDecompress(f, AlgoLZ4|1, "golden/compress/*.lz4*.bin") }
func FuzzZlib(f *testing.F)   { fuzzDecompress(f, AlgoZlib|1, "golden/compress/*.zlib*.bin") }
func FuzzBrotli(f *testing.F) { fuzzDecompress(f, AlgoBrotli|1, "golden/compress/*.brotli*.bin") }
func FuzzZstd(f *testing.F)   { fuzzDecompress(f, AlgoZstd|1, "") }

func FuzzPeekType(f *testing.F) {
	addGoldenSeeds(f, "golden/rencode/*.bin")
	addGoldenSeeds(f, "golden/bencode/*.bin")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, flags := range []ProtoFlags{FlagBencode, FlagRencode, FlagRencodePlus} {
			for _, c := range []Compression{NoCompression, AlgoLZ4 | 1} {
				typ, err := PeekType(Header{Flags: flags, Compression: c, Size: uint32(len(data))}, data)
				if err != nil || c != NoCompression {
					continue
				}
				// When the whole packet decodes, the peek agrees.
				v, derr := flags.Encoding().Decode(data)
				l, _ := v.([]any)
				if derr != nil || len(l) == 0 {
					continue
				}
				p := Packet(l)
				if a, ok := p.Alias(); ok {
					if got, isAlias := typ.Alias(); !isAlias || got != a {
						t.Fatalf("peeked %v, decoded alias %d", typ, a)
					}
				} else if name, ok := AsText(p[0]); ok && !typ.Is(name) {
					t.Fatalf("peeked %v, decoded %q", typ, name)
				}
			}
		}
	})
}

// FuzzStreamReader: what a server sends a dialing proxy, frames or a
// plain-text refusal, read to the end: a refusal is printable, one line,
// at most MaxTextLine bytes.
func FuzzStreamReader(f *testing.F) {
	f.Add([]byte("disconnect invalid compression: zlib is not available\n"))
	f.Add([]byte("short"))
	if b, err := os.ReadFile("testdata/capture6/s2c.bin"); err == nil {
		f.Add(b[:min(len(b), 4096)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewStreamReader(bytes.NewReader(data), fuzzLimit)
		for i := 0; i < 64; i++ {
			_, err := r.ReadPacket()
			var te *TextError
			if errors.As(err, &te) {
				if len(te.Line) > MaxTextLine || bytes.ContainsAny([]byte(te.Line), "\n\x00") {
					t.Fatalf("refusal line %q", te.Line)
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// FuzzDecrypt feeds arbitrary bytes to the decryptor of each mode, as
// a hostile peer on an encrypted link would: an error or a clear frame no
// larger than its input, never a panic, never more than the limit held.
func FuzzDecrypt(f *testing.F) {
	for _, seed := range [][]byte{clearFrame([]byte("hello")), []byte("PPPPPPPP"), {'P', 2, 0, 0, 0, 0, 0, 0}} {
		f.Add(seed)
	}
	for _, spec := range []CipherSpec{testSpec(f, "CBC", 32, PaddingLegacy, false), testSpec(f, "CBC", 16, PaddingPKCS7, true)} {
		enc, _ := NewEncryptor(spec)
		sealed, _ := enc.Seal(nil, clearFrame(bytes.Repeat([]byte("x"), 40)))
		f.Add(sealed)
	}
	specs := []CipherSpec{
		testSpec(f, "CBC", 32, PaddingLegacy, false),
		testSpec(f, "CBC", 16, PaddingPKCS7, false),
		testSpec(f, "CTR", 0, "", false),
		testSpec(f, "CBC", 16, PaddingPKCS7, true),
		testSpec(f, "CTR", 0, "", true),
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, spec := range specs {
			dec, err := NewDecryptor(spec)
			if err != nil {
				t.Fatal(err)
			}
			rest := in
			for len(rest) > 0 {
				out, n, err := dec.Open(nil, rest, fuzzLimit)
				if err != nil {
					break
				}
				if n == 0 || n > len(rest) || len(out) > n {
					t.Fatalf("Open used %d of %d bytes for %d clear bytes", n, len(rest), len(out))
				}
				if h, err := ParseHeader(out); err != nil || h.Flags&FlagCipher != 0 || int(h.Size) != len(out)-HeaderSize {
					t.Fatalf("bad clear header %v %v", h, err)
				}
				rest = rest[n:]
			}
		}
	})
}
