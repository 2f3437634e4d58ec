package frame

// xpra's AES layer (xpra-spec §1.7): the header stays in the clear with
// FlagCipher set and the size of the payload before padding; the payload
// (compressed and encoded as usual) is padded and encrypted. 3.1 pads CBC
// to 32 bytes with PKCS#7 or "legacy" spaces, 6.x to 16 with PKCS#7; CTR
// is not padded. A "stream" direction runs one cipher over all its
// payloads; otherwise each payload starts with a fresh 16-byte IV, which
// the header's size counts.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// Padding names, as xpra's caps spell them.
const (
	PaddingPKCS7  = "PKCS#7"
	PaddingLegacy = "legacy"
)

// Key derivation bounds: xpra 3.1 accepts 100..10000 iterations, 6.x
// 1000..1000000. A peer's caps choose the count, so it is bounded: each
// derivation runs on the loop's worker pool and costs CPU per iteration.
const (
	MinKeyIterations = 100
	MaxKeyIterations = 1000000
)

// ErrUnencrypted is a clear frame on a direction that has a cipher
// (xpra: "unencrypted packet dropped").
var ErrUnencrypted = errors.New("unencrypted packet dropped")

// ErrNoCipher is an encrypted frame where no cipher was agreed.
var ErrNoCipher = errors.New("invalid encryption packet flag (no cipher configured)")

// PaddingError is a payload whose padding does not match after
// decryption: almost always a peer with another key. Its text is xpra's.
type PaddingError struct{ Cipher string }

func (e *PaddingError) Error() string {
	return e.Cipher + " encryption padding error - wrong key?"
}

// CipherSpec is one direction's cipher, as agreed in the hello caps.
type CipherSpec struct {
	// Name is what errors call the cipher: "AES" (3.1) or "AES-CBC".
	Name string
	// Mode is "CBC" or "CTR".
	Mode string
	// Key is the derived AES key (16, 24 or 32 bytes, see DeriveKey).
	Key []byte
	// IV is the 16-byte initial vector of a stream direction.
	IV []byte
	// PadBlock is the padding block: 32 for 3.1's CBC, 16 for 6.x's,
	// 0 for CTR.
	PadBlock int
	// Padding is PaddingPKCS7 or PaddingLegacy (3.1 only).
	Padding string
	// PerPacketIV: no stream; each payload carries its own IV (6.x's
	// stream=false).
	PerPacketIV bool
	// Skip is how many CTR key stream bytes of the first block a resumed
	// stream has used already (Encryptor.Resume).
	Skip int
}

// DeriveKey stretches a shared secret as xpra does: PBKDF2 with the hash
// the caps name (SHA1 in 3.1) over salt, size bytes long.
func DeriveKey(secret, salt []byte, hashName string, size, iterations int) ([]byte, error) {
	if len(secret) == 0 {
		return nil, errors.New("encryption key is missing")
	}
	if iterations < MinKeyIterations || iterations > MaxKeyIterations {
		return nil, fmt.Errorf("invalid number of iterations %d", iterations)
	}
	if size != 16 && size != 24 && size != 32 {
		return nil, fmt.Errorf("invalid key size %d", size)
	}
	var h func() hash.Hash
	switch strings.ToUpper(hashName) {
	case "", "SHA1":
		h = sha1.New
	case "SHA224":
		h = sha256.New224
	case "SHA256":
		h = sha256.New
	case "SHA384":
		h = sha512.New384
	case "SHA512":
		h = sha512.New
	default:
		return nil, fmt.Errorf("unsupported key hash algorithm %q", hashName)
	}
	return pbkdf2.Key(h, string(secret), salt, iterations, size)
}

func (s *CipherSpec) check() (cipher.Block, error) {
	if s.Mode != "CBC" && s.Mode != "CTR" {
		return nil, fmt.Errorf("unsupported AES mode %q", s.Mode)
	}
	if !s.PerPacketIV && len(s.IV) != aes.BlockSize {
		return nil, fmt.Errorf("invalid iv length %d", len(s.IV))
	}
	switch {
	case s.Mode == "CTR" && s.PadBlock != 0,
		s.Mode == "CBC" && s.PadBlock != 16 && s.PadBlock != 32:
		return nil, fmt.Errorf("invalid padding block %d for %s", s.PadBlock, s.Mode)
	}
	if s.PadBlock > 0 && s.Padding != PaddingPKCS7 && s.Padding != PaddingLegacy {
		return nil, fmt.Errorf("unsupported padding %q", s.Padding)
	}
	if s.Name == "" {
		s.Name = "AES-" + s.Mode
	}
	b, err := aes.NewCipher(s.Key)
	if err != nil {
		return nil, fmt.Errorf("frame: aes key: %w", err)
	}
	return b, nil
}

// padLen is how many padding bytes follow a payload of n bytes: CBC
// always pads, 1..PadBlock bytes.
func (s *CipherSpec) padLen(n int) int {
	if s.PadBlock == 0 {
		return 0
	}
	return s.PadBlock - n%s.PadBlock
}

func (s *CipherSpec) padByte(pad int) byte {
	if s.Padding == PaddingLegacy {
		return ' '
	}
	return byte(pad)
}

func (s *CipherSpec) ivLen() int {
	if s.PerPacketIV {
		return aes.BlockSize
	}
	return 0
}

// xorer is one of cipher.BlockMode and cipher.Stream: what en- or
// decrypts a run of bytes (whole blocks for CBC).
type xorer func(dst, src []byte)

func newXorer(b cipher.Block, mode string, iv []byte, decrypt bool) xorer {
	if mode == "CTR" {
		return cipher.NewCTR(b, iv).XORKeyStream
	}
	if decrypt {
		return cipher.NewCBCDecrypter(b, iv).CryptBlocks
	}
	return cipher.NewCBCEncrypter(b, iv).CryptBlocks
}

// Decryptor opens one direction's encrypted frames.
type Decryptor struct {
	spec  CipherSpec
	block cipher.Block
	x     xorer // the stream's cipher; nil with PerPacketIV
}

// NewDecryptor checks spec and starts its stream.
func NewDecryptor(spec CipherSpec) (*Decryptor, error) {
	b, err := spec.check()
	if err != nil {
		return nil, err
	}
	d := &Decryptor{spec: spec, block: b}
	if !spec.PerPacketIV {
		d.x = newXorer(b, spec.Mode, spec.IV, true)
	}
	return d, nil
}

// Name is the cipher's name for messages.
func (d *Decryptor) Name() string { return d.spec.Name }

// EncryptedLen reports how many bytes the encrypted frame at the start of
// buf occupies on the wire (header, payload, padding), checking its header
// against maxSize. ErrShortBuffer: no whole header yet.
func (d *Decryptor) EncryptedLen(buf []byte, maxSize int) (int, Header, error) {
	h, err := ParseHeader(buf)
	if err != nil {
		return 0, h, err
	}
	if err := h.Check(maxSize); err != nil {
		return 0, h, err
	}
	if h.Flags&FlagCipher == 0 {
		return 0, h, ErrUnencrypted
	}
	n := int(h.Size)
	if n <= d.spec.ivLen() {
		return 0, h, &HeaderError{Reason: fmt.Sprintf("invalid encrypted payload size %d", n)}
	}
	return HeaderSize + n + d.spec.padLen(n), h, nil
}

// Open decrypts the encrypted frame at the start of buf and appends the
// clear frame to dst: its header without FlagCipher and with the payload's
// size, then the payload. It returns dst and how many bytes of buf it
// used; ErrShortBuffer when buf does not yet hold the whole frame. dst
// must not overlap buf. A padding mismatch is a *PaddingError; any error
// leaves the stream unusable.
func (d *Decryptor) Open(dst, buf []byte, maxSize int) ([]byte, int, error) {
	total, h, err := d.EncryptedLen(buf, maxSize)
	if err != nil {
		return dst, 0, err
	}
	if len(buf) < total {
		return dst, 0, ErrShortBuffer
	}
	body := buf[HeaderSize:total]
	x := d.x
	if d.spec.PerPacketIV {
		x = newXorer(d.block, d.spec.Mode, body[:aes.BlockSize], true)
		body = body[aes.BlockSize:]
	}
	plainLen := int(h.Size) - d.spec.ivLen()
	h.Flags &^= FlagCipher
	h.Size = uint32(plainLen)
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize+len(body))...)
	h.Put(dst[start:])
	out := dst[start+HeaderSize:]
	x(out, body)
	if pad := len(body) - plainLen; pad > 0 {
		want := d.spec.padByte(pad)
		for _, c := range out[plainLen:] {
			if c != want {
				return dst[:start], 0, &PaddingError{Cipher: d.spec.Name}
			}
		}
	}
	return dst[:start+HeaderSize+plainLen], total, nil
}

// Encryptor seals one direction's frames. It takes the clear byte stream
// in any pieces, whole frames or not, and holds at most a header and one
// partial AES block between calls.
type Encryptor struct {
	spec  CipherSpec
	block cipher.Block
	x     xorer

	hdr  [HeaderSize]byte
	hn   int // header bytes held
	left int // payload bytes of the current frame still to come
	pad  int // padding after them
	part [3 * aes.BlockSize]byte
	pn   int // bytes of an incomplete CBC block held in part

	// Where the stream is, for Resume: the last CBC ciphertext block, the
	// CTR bytes used.
	last [aes.BlockSize]byte
	used uint64
}

// NewEncryptor checks spec and starts its stream.
func NewEncryptor(spec CipherSpec) (*Encryptor, error) {
	b, err := spec.check()
	if err != nil {
		return nil, err
	}
	e := &Encryptor{spec: spec, block: b}
	if !spec.PerPacketIV {
		e.x = newXorer(b, spec.Mode, spec.IV, false)
		if spec.Mode == "CTR" && spec.Skip > 0 {
			var skip [aes.BlockSize]byte
			e.x(skip[:spec.Skip%aes.BlockSize], skip[:spec.Skip%aes.BlockSize])
			e.used = uint64(spec.Skip % aes.BlockSize)
		}
	}
	return e, nil
}

// Boundary reports whether the stream is between frames: only there may
// the cipher change.
func (e *Encryptor) Boundary() bool { return e.hn == 0 && e.left == 0 && e.pad == 0 }

// Seal appends the encryption of p, a piece of the clear frame stream, to
// dst. It fails on a header it cannot encrypt (a bad magic, say): the
// stream is then unusable.
func (e *Encryptor) Seal(dst, p []byte) ([]byte, error) {
	for len(p) > 0 {
		if e.left == 0 && e.pad == 0 {
			n := copy(e.hdr[e.hn:], p)
			e.hn += n
			p = p[n:]
			if e.hn < HeaderSize {
				break
			}
			var err error
			if dst, err = e.startFrame(dst); err != nil {
				return dst, err
			}
			if e.left == 0 {
				dst = e.finish(dst)
			}
			continue
		}
		n := min(len(p), e.left)
		dst = e.payload(dst, p[:n])
		p = p[n:]
		e.left -= n
		if e.left == 0 {
			dst = e.finish(dst)
		}
	}
	return dst, nil
}

func (e *Encryptor) startFrame(dst []byte) ([]byte, error) {
	h, err := ParseHeader(e.hdr[:])
	e.hn = 0
	if err != nil {
		return dst, fmt.Errorf("frame: encrypt: %w", err)
	}
	if h.Flags&FlagCipher != 0 {
		return dst, errors.New("frame: encrypt: frame is already encrypted")
	}
	e.left = int(h.Size)
	e.pad = e.spec.padLen(e.left)
	h.Flags |= FlagCipher
	h.Size += uint32(e.spec.ivLen())
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	h.Put(dst[start:])
	if e.spec.PerPacketIV {
		var iv [aes.BlockSize]byte
		if _, err := rand.Read(iv[:]); err != nil {
			return dst, fmt.Errorf("frame: encrypt: iv: %w", err)
		}
		dst = append(dst, iv[:]...)
		e.x = newXorer(e.block, e.spec.Mode, iv[:], false)
	}
	return dst, nil
}

// payload encrypts p: CTR at once, CBC a whole block at a time, holding
// the rest for the next piece.
func (e *Encryptor) payload(dst, p []byte) []byte {
	if e.spec.Mode == "CTR" {
		start := len(dst)
		dst = append(dst, p...)
		e.x(dst[start:], dst[start:])
		e.used += uint64(len(p))
		return dst
	}
	if e.pn > 0 {
		n := copy(e.part[e.pn:aes.BlockSize], p)
		e.pn += n
		p = p[n:]
		if e.pn < aes.BlockSize {
			return dst
		}
		dst = e.crypt(dst, e.part[:aes.BlockSize])
		e.pn = 0
	}
	whole := len(p) &^ (aes.BlockSize - 1)
	dst = e.crypt(dst, p[:whole])
	e.pn = copy(e.part[:], p[whole:])
	return dst
}

func (e *Encryptor) crypt(dst, p []byte) []byte {
	start := len(dst)
	dst = append(dst, p...)
	e.x(dst[start:], dst[start:])
	if e.spec.Mode == "CBC" && len(p) >= aes.BlockSize {
		copy(e.last[:], dst[len(dst)-aes.BlockSize:])
		e.used += uint64(len(p))
	}
	return dst
}

// Resume returns a spec whose encryptor carries on this stream where it
// is: another process takes the link over (a root proxy's worker). It
// fails between frames' pieces.
func (e *Encryptor) Resume() (CipherSpec, error) {
	if !e.Boundary() {
		return CipherSpec{}, errors.New("frame: encrypt: resume inside a frame")
	}
	spec := e.spec
	if spec.PerPacketIV {
		return spec, nil
	}
	iv := make([]byte, aes.BlockSize)
	switch spec.Mode {
	case "CBC":
		copy(iv, spec.IV)
		if e.used > 0 {
			copy(iv, e.last[:])
		}
	case "CTR":
		// The counter is the IV as a big-endian number, one per block.
		copy(iv, spec.IV)
		carry := e.used / aes.BlockSize
		for i := aes.BlockSize - 1; i >= 0 && carry > 0; i-- {
			sum := uint64(iv[i]) + carry&0xff
			iv[i] = byte(sum)
			carry = carry>>8 + sum>>8
		}
		spec.Skip = int(e.used % aes.BlockSize)
	}
	spec.IV = iv
	return spec, nil
}

// finish pads and encrypts the frame's last block.
func (e *Encryptor) finish(dst []byte) []byte {
	if e.pad > 0 {
		b := e.spec.padByte(e.pad)
		for i := 0; i < e.pad; i++ {
			e.part[e.pn+i] = b
		}
		dst = e.crypt(dst, e.part[:e.pn+e.pad])
	}
	e.pn, e.pad = 0, 0
	return dst
}
