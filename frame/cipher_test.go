package frame

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func testSpec(t testing.TB, mode string, padBlock int, padding string, perPacket bool) CipherSpec {
	t.Helper()
	key, err := DeriveKey([]byte("secret key"), []byte("0123456789abcdef0123456789abcdef"), "SHA1", 32, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return CipherSpec{Mode: mode, Key: key, IV: []byte("0000111122223333"), PadBlock: padBlock, Padding: padding, PerPacketIV: perPacket}
}

func clearFrame(payload []byte) []byte {
	h := Header{Flags: FlagRencode, Size: uint32(len(payload))}
	b := make([]byte, HeaderSize, HeaderSize+len(payload))
	h.Put(b)
	return append(b, payload...)
}

// TestCipherRoundTrip seals frames of every size around the padding
// blocks, fed in pieces of every size, and opens them again.
func TestCipherRoundTrip(t *testing.T) {
	specs := map[string]CipherSpec{
		"3.1 CBC legacy": testSpec(t, "CBC", 32, PaddingLegacy, false),
		"3.1 CBC PKCS#7": testSpec(t, "CBC", 32, PaddingPKCS7, false),
		"6.x CBC":        testSpec(t, "CBC", 16, PaddingPKCS7, false),
		"6.x CTR":        testSpec(t, "CTR", 0, "", false),
		"6.x CBC per-IV": testSpec(t, "CBC", 16, PaddingPKCS7, true),
		"6.x CTR per-IV": testSpec(t, "CTR", 0, "", true),
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			var stream []byte
			var payloads [][]byte
			for _, n := range []int{1, 15, 16, 17, 31, 32, 33, 100, 4096} {
				p := bytes.Repeat([]byte{byte(n)}, n)
				payloads = append(payloads, p)
				stream = append(stream, clearFrame(p)...)
			}
			for _, piece := range []int{1, 3, 8, 16, 1000, len(stream)} {
				enc, err := NewEncryptor(spec)
				if err != nil {
					t.Fatal(err)
				}
				var sealed []byte
				for rest := stream; len(rest) > 0; {
					n := min(piece, len(rest))
					if sealed, err = enc.Seal(sealed, rest[:n]); err != nil {
						t.Fatal(err)
					}
					rest = rest[n:]
				}
				if !enc.Boundary() {
					t.Fatal("encryptor not at a frame boundary after whole frames")
				}
				dec, err := NewDecryptor(spec)
				if err != nil {
					t.Fatal(err)
				}
				var opened []byte
				for _, p := range payloads {
					// A truncated frame waits, and costs the stream nothing.
					size, _, err := dec.EncryptedLen(sealed, 0)
					if err != nil {
						t.Fatal(err)
					}
					if _, _, err := dec.Open(nil, sealed[:size-1], 0); !errors.Is(err, ErrShortBuffer) {
						t.Fatalf("truncated frame of %d: %v", len(p), err)
					}
					var n int
					if opened, n, err = dec.Open(opened, sealed, 0); err != nil {
						t.Fatalf("piece %d: %v", piece, err)
					}
					sealed = sealed[n:]
				}
				if len(sealed) != 0 || !bytes.Equal(opened, stream) {
					t.Fatalf("piece %d: round trip differs (%d bytes left)", piece, len(sealed))
				}
			}
		})
	}
}

// TestCipherWrongKey: a frame sealed with another key fails with xpra's
// padding error, and a clear frame on an encrypted direction is refused.
func TestCipherWrongKey(t *testing.T) {
	spec := testSpec(t, "CBC", 16, PaddingPKCS7, false)
	enc, _ := NewEncryptor(spec)
	sealed, err := enc.Seal(nil, clearFrame([]byte("hello world, a packet")))
	if err != nil {
		t.Fatal(err)
	}
	other := spec
	other.Key, _ = DeriveKey([]byte("another key"), []byte("0123456789abcdef0123456789abcdef"), "SHA1", 32, 1000)
	other.Name = "AES-CBC"
	dec, _ := NewDecryptor(other)
	_, _, err = dec.Open(nil, sealed, 0)
	var pe *PaddingError
	if !errors.As(err, &pe) || err.Error() != "AES-CBC encryption padding error - wrong key?" {
		t.Fatalf("wrong key: %v", err)
	}
	dec, _ = NewDecryptor(spec)
	if _, _, err := dec.Open(nil, clearFrame([]byte("x")), 0); !errors.Is(err, ErrUnencrypted) {
		t.Fatalf("clear frame: %v", err)
	}
	// A header past the limit is refused before anything is held.
	big := append([]byte(nil), sealed...)
	big[4], big[5] = 0x7f, 0xff
	if _, _, err := dec.Open(nil, big, 1<<16); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
}

// TestCipherXpra31 exchanges frames with Debian's xpra 3.1.3 crypto code
// both ways: its key derivation, CBC stream and 32-byte padding.
func TestCipherXpra31(t *testing.T) {
	requirePeer(t, "/usr/lib/python3/dist-packages/xpra/net/crypto.py")
	salt := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	for _, padding := range []string{PaddingLegacy, PaddingPKCS7} {
		key, err := DeriveKey([]byte("the shared secret"), salt, "SHA1", 32, 1000)
		if err != nil {
			t.Fatal(err)
		}
		spec := CipherSpec{Name: "AES", Mode: "CBC", Key: key, IV: []byte("a1b2c3d4e5f60718"), PadBlock: 32, Padding: padding}
		enc, _ := NewEncryptor(spec)
		var lines []string
		var payloads []string
		for _, n := range []int{1, 31, 32, 33, 200} {
			p := bytes.Repeat([]byte{byte('a' + n%26)}, n)
			payloads = append(payloads, hex.EncodeToString(p))
			sealed, err := enc.Seal(nil, clearFrame(p))
			if err != nil {
				t.Fatal(err)
			}
			// xpra's reader takes the payload after the header.
			lines = append(lines, hex.EncodeToString(sealed))
		}
		args := append([]string{"testdata/xpra31_aes.py", "the shared secret", hex.EncodeToString(salt), "a1b2c3d4e5f60718", strconv.Itoa(1000), padding}, payloads...)
		cmd := exec.Command("/usr/bin/python3", args...)
		cmd.Dir = "."
		cmd.Env = append(cmd.Environ(), "PYTHONPATH=/usr/lib/python3/dist-packages")
		cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("xpra 3.1: %v\n%s", err, out)
		}
		got := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(got) != 2*len(payloads)+1 || got[len(payloads)] != "--" {
			t.Fatalf("xpra 3.1 output: %s", out)
		}
		for i, p := range payloads {
			// What xpra decrypted from our frames (the payload after
			// the clear header, which it reads as bytes of a packet).
			if want := hex.EncodeToString(clearFrame(mustHex(p))[HeaderSize:]); got[i] != want {
				t.Errorf("%s: xpra decrypted %d: %s, want %s", padding, i, got[i], want)
			}
		}
		dec, _ := NewDecryptor(spec)
		for i, p := range payloads {
			frameBytes := mustHex(got[len(payloads)+1+i])
			opened, _, err := dec.Open(nil, frameBytes, 0)
			if err != nil {
				t.Fatalf("%s: open xpra's frame %d: %v", padding, i, err)
			}
			if hex.EncodeToString(opened[HeaderSize:]) != p {
				t.Errorf("%s: frame %d decrypts to %x", padding, i, opened[HeaderSize:])
			}
		}
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestCipherResume: a stream resumed from Resume (as a root proxy's
// worker takes a link over) goes on where the first encryptor stopped.
func TestCipherResume(t *testing.T) {
	for _, spec := range []CipherSpec{
		testSpec(t, "CBC", 32, PaddingLegacy, false),
		testSpec(t, "CBC", 16, PaddingPKCS7, false),
		testSpec(t, "CTR", 0, "", false),
		testSpec(t, "CTR", 0, "", true),
	} {
		var stream, sealed []byte
		enc, _ := NewEncryptor(spec)
		for i, n := range []int{5, 17, 300, 1, 33, 4099, 7} {
			if i == 3 || i == 5 {
				next, err := enc.Resume()
				if err != nil {
					t.Fatal(err)
				}
				if enc, err = NewEncryptor(next); err != nil {
					t.Fatal(err)
				}
			}
			f := clearFrame(bytes.Repeat([]byte{byte(n)}, n))
			stream = append(stream, f...)
			sealed, _ = enc.Seal(sealed, f)
		}
		dec, _ := NewDecryptor(spec)
		var opened []byte
		for len(sealed) > 0 {
			var n int
			var err error
			if opened, n, err = dec.Open(opened, sealed, 0); err != nil {
				t.Fatalf("%s: %v", spec.Mode, err)
			}
			sealed = sealed[n:]
		}
		if !bytes.Equal(opened, stream) {
			t.Fatalf("%s per-packet=%v: resumed stream differs", spec.Mode, spec.PerPacketIV)
		}
	}
}

// BenchmarkCipher is the AES layer alone on 64 KiB frames (what one core
// seals and opens per second), each mode; BENCHMARKS.md.
func BenchmarkCipher(b *testing.B) {
	for _, c := range []struct {
		name string
		spec CipherSpec
	}{
		{"3.1-CBC", testSpec(b, "CBC", 32, PaddingPKCS7, false)},
		{"6.x-CBC", testSpec(b, "CBC", 16, PaddingPKCS7, false)},
		{"6.x-CTR", testSpec(b, "CTR", 0, "", false)},
	} {
		f := clearFrame(bytes.Repeat([]byte("x"), 64<<10))
		b.Run(c.name+"/seal", func(b *testing.B) {
			enc, _ := NewEncryptor(c.spec)
			out := make([]byte, 0, len(f)+64)
			b.SetBytes(int64(len(f)))
			for b.Loop() {
				out, _ = enc.Seal(out[:0], f)
			}
		})
		b.Run(c.name+"/open", func(b *testing.B) {
			enc, _ := NewEncryptor(c.spec)
			dec, _ := NewDecryptor(c.spec)
			sealed, _ := enc.Seal(nil, f)
			out := make([]byte, 0, len(f)+64)
			b.SetBytes(int64(len(f)))
			for b.Loop() {
				// The same frame each time: CBC's chain is off after the
				// first, so the padding check fails; the work is the same.
				out, _, _ = dec.Open(out[:0], sealed, 0)
			}
		})
	}
}
