package frame

import "fmt"

// xpra 3.1's defaults for splitting and compressing packets
// (xpra/net/protocol.py).
const (
	DefaultLargePacketSize = 4096  // LARGE_PACKET_SIZE: bytes args above it become chunks
	DefaultInlineSize      = 32768 // INLINE_SIZE: inlinable Compressed args up to it stay inline
	DefaultMinCompressSize = 378   // MIN_COMPRESS_SIZE: smaller main packets are not compressed
)

// Writer turns packets into frames the way xpra's Protocol.encode does.
// The zero value writes uncompressed bencode; set Encoding and Compression
// from what the peer negotiated.
type Writer struct {
	Encoding Encoding
	// Compression is the link compressor and level (for example
	// AlgoLZ4.WithLevel(1)); NoCompression sends everything uncompressed.
	Compression Compression
	// Thresholds; zero means xpra 3.1's default.
	LargePacketSize int
	InlineSize      int
	MinCompressSize int
	// Flush sets FlagFlush on main frames (xpra ≥ 4.1 peers only).
	Flush bool
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

// AppendPacket appends the frames of p to dst: first a raw chunk for each
// Compressed argument that cannot be inlined and for each large []byte
// argument (compressed with the link compressor), then the main frame.
// p is not modified.
func (w *Writer) AppendPacket(dst []byte, p Packet) ([]byte, error) {
	if len(p) == 0 {
		return dst, fmt.Errorf("frame: empty packet")
	}
	large := orDefault(w.LargePacketSize, DefaultLargePacketSize)
	inline := orDefault(w.InlineSize, DefaultInlineSize)
	minComp := orDefault(w.MinCompressSize, DefaultMinCompressSize)
	level := w.Compression.Level()
	main := Packet(nil)
	setArg := func(i int, v any) {
		if main == nil {
			main = append(Packet(nil), p...)
		}
		main[i] = v
	}
	for i := 1; i < len(p); i++ {
		switch v := p[i].(type) {
		case nil:
			return dst, fmt.Errorf("frame: invalid None value in %s at index %d", p, i)
		case Compressed:
			if !v.CanInline || len(v.Data) > inline {
				if i >= MaxChunkIndex {
					return dst, fmt.Errorf("frame: chunk index %d too high in %s", i, p)
				}
				dst = appendFrame(dst, Header{Compression: v.Compression, Index: uint8(i)}, v.Data)
				setArg(i, []byte{})
			} else {
				setArg(i, v.Data)
				minComp += len(v.Data)
			}
		case []byte:
			if level > 0 && len(v) > large && i < MaxChunkIndex {
				at := len(dst)
				c, out, err := AppendCompress(append(dst, make([]byte, HeaderSize)...), w.Compression, v)
				if err != nil {
					return dst[:at], err
				}
				dst = out
				Header{Compression: c, Index: uint8(i), Size: uint32(len(dst) - at - HeaderSize)}.Put(dst[at:])
				setArg(i, "")
			}
		}
	}
	if main == nil {
		main = p
	}
	start := len(dst)
	// Encode after a header-sized gap, then fill the header in: one
	// buffer, no copy, when the main packet stays uncompressed.
	dst = append(dst, make([]byte, HeaderSize)...)
	dst, err := w.Encoding.Append(dst, []any(main))
	if err != nil {
		return dst[:start], err
	}
	h := Header{Flags: w.Encoding.Flag()}
	if w.Flush {
		h.Flags |= FlagFlush
	}
	body := dst[start+HeaderSize:]
	if level > 0 && len(body) > minComp {
		// Compressed after the body in the same buffer, then moved over it.
		end := len(dst)
		c, out, err := AppendCompress(dst, w.Compression, body)
		if err != nil {
			return dst[:start], err
		}
		h.Compression = c
		dst = out[:start+HeaderSize+copy(out[start+HeaderSize:], out[end:])]
		body = dst[start+HeaderSize:]
	}
	h.Size = uint32(len(body))
	h.Put(dst[start:])
	return dst, nil
}

func appendFrame(dst []byte, h Header, payload []byte) []byte {
	h.Size = uint32(len(payload))
	return append(h.Append(dst), payload...)
}
