package frame

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// MaxTypeLen is the longest packet type PeekType reports. xpra's longest
// packet names are under 40 characters.
const MaxTypeLen = 64

// peekPrefix is how much of a compressed payload PeekType decompresses: a
// list marker, a length prefix and the longest type name.
const peekPrefix = 2 + 12 + MaxTypeLen

// Type is a packet's type learnt without decoding the packet: a name, or
// an integer alias. It is a value with no pointers into the payload, so it
// stays valid after the payload's buffer is reused.
type Type struct {
	alias   int64
	isAlias bool
	n       uint8
	name    [MaxTypeLen]byte
}

// Is reports whether the type is the named one. It never allocates.
func (t *Type) Is(name string) bool {
	return !t.isAlias && int(t.n) == len(name) && string(t.name[:t.n]) == name
}

// Alias returns the integer type of an aliased packet.
func (t *Type) Alias() (int64, bool) { return t.alias, t.isAlias }

// Name returns the type name ("" for an alias).
func (t *Type) Name() string {
	if t.isAlias {
		return ""
	}
	return string(t.name[:t.n])
}

func (t Type) String() string {
	if t.isAlias {
		return fmt.Sprintf("alias %d", t.alias)
	}
	return t.Name()
}

// PeekType returns the type of the main packet whose header is h and whose
// (possibly compressed) payload is payload, reading only its first bytes.
// Uncompressed and lz4 payloads are peeked without allocating; zlib,
// brotli and zstd need a small stream reader.
func PeekType(h Header, payload []byte) (Type, error) {
	if h.Index != 0 {
		return Type{}, fmt.Errorf("frame: chunk %d is not a main packet", h.Index)
	}
	if h.Flags&FlagCipher != 0 {
		return Type{}, ErrEncrypted
	}
	var scratch [peekPrefix]byte
	data := payload
	if h.Compression.Compressed() {
		n, err := decompressPrefix(h.Compression, payload, scratch[:])
		if err != nil {
			return Type{}, fmt.Errorf("frame: %s packet decompression failed: %w", h.Compression.Algo().name(), err)
		}
		data = scratch[:n]
	}
	switch enc := h.Flags.Encoding(); enc {
	case Rencode, RencodePlus:
		return peekRencode(data, enc)
	case Bencode:
		return peekBencode(data)
	default:
		return Type{}, fmt.Errorf("frame: cannot peek %s packets", enc)
	}
}

func peekFail(enc Encoding, reason string) (Type, error) {
	return Type{}, &DecodeError{Encoding: enc, Reason: "packet type: " + reason}
}

func (t *Type) setName(b []byte, enc Encoding) (Type, error) {
	if len(b) > MaxTypeLen {
		return peekFail(enc, fmt.Sprintf("name longer than %d bytes", MaxTypeLen))
	}
	t.n = uint8(copy(t.name[:], b))
	return *t, nil
}

func peekRencode(b []byte, enc Encoding) (Type, error) {
	var t Type
	if len(b) < 2 {
		return peekFail(enc, "truncated")
	}
	if b[0] != rList && (b[0] < rListFix+1) {
		return peekFail(enc, fmt.Sprintf("not a list (type byte 0x%02x)", b[0]))
	}
	c := b[1]
	switch {
	case c >= rStrFix && c < rStrFix+rStrFixN:
		n := int(c - rStrFix)
		if len(b) < 2+n {
			return peekFail(enc, "truncated name")
		}
		return t.setName(b[2:2+n], enc)
	case c >= '0' && c <= '9':
		n, i := 0, 1
		for ; i < len(b) && i < 14 && b[i] >= '0' && b[i] <= '9'; i++ {
			n = n*10 + int(b[i]-'0')
		}
		if i >= len(b) || (b[i] != ':' && !(b[i] == '/' && enc == RencodePlus)) {
			return peekFail(enc, "invalid name length")
		}
		if n > MaxTypeLen {
			return peekFail(enc, fmt.Sprintf("name longer than %d bytes", MaxTypeLen))
		}
		if len(b) < i+1+n {
			return peekFail(enc, "truncated name")
		}
		return t.setName(b[i+1:i+1+n], enc)
	case c < rIntPosN:
		t.alias, t.isAlias = int64(c), true
		return t, nil
	case c == rInt1 && len(b) >= 3:
		t.alias, t.isAlias = int64(int8(b[2])), true
		return t, nil
	case c == rInt2 && len(b) >= 4:
		t.alias, t.isAlias = int64(int16(binary.BigEndian.Uint16(b[2:]))), true
		return t, nil
	}
	return peekFail(enc, fmt.Sprintf("invalid type byte 0x%02x", c))
}

func peekBencode(b []byte) (Type, error) {
	var t Type
	if len(b) < 2 || b[0] != 'l' {
		return peekFail(Bencode, "not a list")
	}
	i := 1
	if b[i] == 'i' {
		x, j := int64(0), i+1
		for ; j < len(b) && j < i+8 && b[j] >= '0' && b[j] <= '9'; j++ {
			x = x*10 + int64(b[j]-'0')
		}
		if j >= len(b) || b[j] != 'e' || j == i+1 {
			return peekFail(Bencode, "invalid alias")
		}
		t.alias, t.isAlias = x, true
		return t, nil
	}
	if b[i] == 'u' {
		i++
	}
	n, j := 0, i
	for ; j < len(b) && j < i+3 && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + int(b[j]-'0')
	}
	if j == i || j >= len(b) || b[j] != ':' {
		return peekFail(Bencode, "invalid name length")
	}
	if len(b) < j+1+n {
		return peekFail(Bencode, "truncated name")
	}
	return t.setName(b[j+1:j+1+n], Bencode)
}

// decompressPrefix fills dst with the first len(dst) bytes (or fewer, if
// the payload is shorter) of the decompressed payload.
func decompressPrefix(c Compression, src, dst []byte) (int, error) {
	switch c.Algo() {
	case AlgoLZ4:
		if len(src) < 4 {
			return 0, fmt.Errorf("%d bytes: no size prefix", len(src))
		}
		return lz4Prefix(src[4:], dst)
	case AlgoZlib, AlgoBrotli, AlgoZstd:
		// Rare for main packets (xpra 3.1's first hello is zlib): a
		// stream reader stops after the prefix, whatever the payload
		// would inflate to.
		var r io.Reader
		switch c.Algo() {
		case AlgoZlib:
			zr, err := zlib.NewReader(bytes.NewReader(src))
			if err != nil {
				return 0, err
			}
			r = zr
		case AlgoBrotli:
			r = brotli.NewReader(bytes.NewReader(src))
		default:
			zr, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
			if err != nil {
				return 0, err
			}
			defer zr.Close()
			r = zr
		}
		buf := make([]byte, len(dst))
		n, err := io.ReadFull(r, buf)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = nil
		}
		return copy(dst, buf[:n]), err
	}
	return 0, fmt.Errorf("%s is not supported", c.Algo().name())
}

// lz4Prefix decodes an LZ4 block only until dst is full: enough to see a
// packet's type without inflating pixel data. pierrec/lz4 can only decode
// whole blocks.
func lz4Prefix(src, dst []byte) (int, error) {
	si, di := 0, 0
	readLen := func(n int) (int, error) {
		if n != 15 {
			return n, nil
		}
		for {
			if si >= len(src) {
				return 0, fmt.Errorf("truncated length")
			}
			b := src[si]
			si++
			n += int(b)
			if b != 255 {
				return n, nil
			}
			if n > 1<<28 {
				return 0, fmt.Errorf("length overflow")
			}
		}
	}
	for di < len(dst) {
		if si >= len(src) {
			return di, fmt.Errorf("truncated block")
		}
		token := src[si]
		si++
		lit, err := readLen(int(token >> 4))
		if err != nil {
			return di, err
		}
		if lit > len(src)-si {
			return di, fmt.Errorf("literals beyond the block")
		}
		di += copy(dst[di:], src[si:si+lit])
		si += lit
		if di >= len(dst) || si == len(src) {
			return di, nil // full, or the last sequence has no match
		}
		if si+2 > len(src) {
			return di, fmt.Errorf("truncated match offset")
		}
		off := int(binary.LittleEndian.Uint16(src[si:]))
		si += 2
		if off == 0 || off > di {
			return di, fmt.Errorf("invalid match offset %d", off)
		}
		ml, err := readLen(int(token & 15))
		if err != nil {
			return di, err
		}
		for ml += 4; ml > 0 && di < len(dst); ml-- {
			dst[di] = dst[di-off]
			di++
		}
	}
	return di, nil
}
