package frame

import (
	"encoding/binary"
	"fmt"
)

// HeaderSize is the length of every xpra frame header.
const HeaderSize = 8

// Magic is the first byte of every frame header ('P').
const Magic = 'P'

// ProtoFlags is the second header byte: the packet encoder plus the cipher
// and flush bits.
type ProtoFlags uint8

// Protocol flag bits. Bencode is "no encoder bit set". Bits are those of
// xpra 3.1 (bencode, rencode, cipher, yaml) and xpra ≥ 4 (flush,
// rencodeplus).
const (
	FlagBencode     ProtoFlags = 0x00
	FlagRencode     ProtoFlags = 0x01
	FlagCipher      ProtoFlags = 0x02
	FlagYAML        ProtoFlags = 0x04
	FlagFlush       ProtoFlags = 0x08
	FlagRencodePlus ProtoFlags = 0x10

	encoderBits = FlagRencode | FlagYAML | FlagRencodePlus
	knownFlags  = encoderBits | FlagCipher | FlagFlush
)

// Encoding returns the packet encoder the flags select, using the rule of
// xpra ≥ 4: rencodeplus, then rencode, then yaml, else bencode. (xpra 3.1
// ignores 0x10 and would read a rencodeplus frame as bencode.)
func (f ProtoFlags) Encoding() Encoding {
	switch {
	case f&FlagRencodePlus != 0:
		return RencodePlus
	case f&FlagRencode != 0:
		return Rencode
	case f&FlagYAML != 0:
		return YAML
	}
	return Bencode
}

// Compression is the third header byte: 0 for uncompressed, otherwise an
// algorithm bit (none for zlib) and the level in the low nibble.
type Compression uint8

// Algorithm bits of the compression byte.
const (
	AlgoZlib   Compression = 0x00 // legacy: "no algorithm bit" means zlib
	AlgoLZ4    Compression = 0x10
	AlgoLZO    Compression = 0x20 // xpra ≤ 4.2; never advertised by us
	AlgoBrotli Compression = 0x40
	AlgoZstd   Compression = 0x80 // xpra master

	algoBits = AlgoLZ4 | AlgoLZO | AlgoBrotli | AlgoZstd
)

// NoCompression is the compression byte of an uncompressed payload.
const NoCompression Compression = 0

// Compressed reports whether the payload must be decompressed.
func (c Compression) Compressed() bool { return c != 0 }

// Level is the compression level in the low nibble.
func (c Compression) Level() int { return int(c & 0x0f) }

// Algo is the algorithm bits, tested in xpra's order (lz4, lzo, brotli,
// zstd, else zlib). It is meaningful only when Compressed is true.
func (c Compression) Algo() Compression {
	switch {
	case c&AlgoLZ4 != 0:
		return AlgoLZ4
	case c&AlgoLZO != 0:
		return AlgoLZO
	case c&AlgoBrotli != 0:
		return AlgoBrotli
	case c&AlgoZstd != 0:
		return AlgoZstd
	}
	return AlgoZlib
}

// WithLevel builds a compression byte for algorithm a at the given level,
// clamped to 1..15 as xpra does (a compressed payload never has level 0).
func (c Compression) WithLevel(level int) Compression {
	level = max(1, min(15, level))
	return c.Algo() | Compression(level)
}

// String names the algorithm and level, for logs.
func (c Compression) String() string {
	if c == 0 {
		return "none"
	}
	return fmt.Sprintf("%s/%d", c.Algo().name(), c.Level())
}

func (c Compression) name() string {
	switch c {
	case AlgoLZ4:
		return "lz4"
	case AlgoLZO:
		return "lzo"
	case AlgoBrotli:
		return "brotli"
	case AlgoZstd:
		return "zstd"
	}
	return "zlib"
}

// Header is a parsed 8-byte frame header.
type Header struct {
	Flags       ProtoFlags
	Compression Compression
	// Index is 0 for a main (encoded) packet and 1..N for a raw chunk that
	// replaces element N of the main packet that follows.
	Index uint8
	// Size is the payload length before any cipher padding.
	Size uint32
}

// AbsMaxPacketSize is xpra's hard limit on a header's payload size
// (abs_max_packet_size, 256 MiB); a larger size is an invalid header.
const AbsMaxPacketSize = 256 << 20

// ParseHeader parses the first 8 bytes of b. It checks the magic byte and
// that the size is non-zero; callers apply their own size limit. It never
// allocates.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, ErrShortBuffer
	}
	if b[0] != Magic {
		return Header{}, &HeaderError{Reason: fmt.Sprintf("invalid packet header byte 0x%02x, not an xpra client?", b[0])}
	}
	h := Header{
		Flags:       ProtoFlags(b[1]),
		Compression: Compression(b[2]),
		Index:       b[3],
		Size:        binary.BigEndian.Uint32(b[4:8]),
	}
	if h.Size == 0 {
		return h, &HeaderError{Reason: "invalid size in packet header: 0"}
	}
	return h, nil
}

// Check validates h against a size limit and the rules xpra ≥ 6 enforces
// that 3.1 peers also never break: known flag bits only, at most one
// encoder, a level on compressed payloads, no encoder bits on raw chunks and
// at most maxChunks chunks per packet. maxSize ≤ 0 means AbsMaxPacketSize.
func (h Header) Check(maxSize int) error {
	if maxSize <= 0 || maxSize > AbsMaxPacketSize {
		maxSize = AbsMaxPacketSize
	}
	if int64(h.Size) > int64(maxSize) {
		return &HeaderError{Reason: fmt.Sprintf("packet size requested is %d but maximum allowed is %d", h.Size, maxSize), TooBig: true}
	}
	if h.Flags&^knownFlags != 0 {
		return &HeaderError{Reason: fmt.Sprintf("invalid protocol flags 0x%02x", uint8(h.Flags))}
	}
	if enc := h.Flags & encoderBits; enc&(enc-1) != 0 {
		return &HeaderError{Reason: fmt.Sprintf("more than one packet encoder in flags 0x%02x", uint8(h.Flags))}
	}
	if h.Compression != 0 {
		if h.Compression.Level() == 0 {
			return &HeaderError{Reason: fmt.Sprintf("invalid compression 0x%02x: no level", uint8(h.Compression))}
		}
		if a := h.Compression & algoBits; a&(a-1) != 0 {
			return &HeaderError{Reason: fmt.Sprintf("invalid compression 0x%02x: more than one algorithm", uint8(h.Compression))}
		}
	}
	if h.Index > 0 {
		if h.Flags&(encoderBits|FlagFlush) != 0 {
			return &HeaderError{Reason: fmt.Sprintf("raw chunk %d with encoder flags 0x%02x", h.Index, uint8(h.Flags))}
		}
		if int(h.Index) >= MaxChunkIndex {
			return &HeaderError{Reason: fmt.Sprintf("invalid packet index %d", h.Index)}
		}
	}
	return nil
}

// Put writes h into b[:8], which must be at least HeaderSize long.
func (h Header) Put(b []byte) {
	_ = b[7]
	b[0] = Magic
	b[1] = byte(h.Flags)
	b[2] = byte(h.Compression)
	b[3] = h.Index
	binary.BigEndian.PutUint32(b[4:8], h.Size)
}

// Append appends the 8 header bytes to dst.
func (h Header) Append(dst []byte) []byte {
	return binary.BigEndian.AppendUint32(append(dst, Magic, byte(h.Flags), byte(h.Compression), h.Index), h.Size)
}

// FrameSize is the number of bytes the frame occupies on the wire: header
// plus payload. Encrypted frames carry padding that depends on the cipher
// and are not supported here (xpraproxy terminates TLS instead).
func (h Header) FrameSize() int { return HeaderSize + int(h.Size) }

// String formats the header for logs.
func (h Header) String() string {
	return fmt.Sprintf("P flags=0x%02x compression=%s index=%d size=%d", uint8(h.Flags), h.Compression, h.Index, h.Size)
}
