package frame

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// DefaultMaxPacketSize is xpra's initial limit on a frame payload (16 MiB);
// peers raise it after the hello for large desktops.
const DefaultMaxPacketSize = 16 << 20

// FrameLen reports how many bytes the frame starting at buf occupies, so a
// caller reading from a non-blocking socket knows how much to wait for. It
// returns ErrShortBuffer while fewer than HeaderSize bytes are available and
// a *HeaderError for an invalid or oversized header. It never allocates.
func FrameLen(buf []byte, maxSize int) (int, Header, error) {
	h, err := ParseHeader(buf)
	if err != nil {
		return 0, h, err
	}
	if err := h.Check(maxSize); err != nil {
		return 0, h, err
	}
	if h.Flags&FlagCipher != 0 {
		return 0, h, ErrEncrypted
	}
	return h.FrameSize(), h, nil
}

// Reader reassembles packets from frames. It does no I/O and keeps no
// copy of its input: the caller offers whatever bytes it has (from a
// non-blocking socket's buffer, say) and discards what Next consumed. Only
// decoded raw chunks are kept between calls, at most MaxChunks of them.
//
// The zero Reader uses DefaultMaxPacketSize.
type Reader struct {
	// MaxPacketSize bounds each frame's payload and each decompressed
	// payload; ≤ 0 means DefaultMaxPacketSize.
	MaxPacketSize int
	// NoChunks refuses raw chunks: before login nothing needs them (a
	// hello is one frame), and each one would be held, decompressed,
	// until its main packet comes.
	NoChunks bool
	// MaxValues bounds the values one packet decodes to (≤ 0: no
	// bound): before login, a small packet must not become a large
	// decoded one.
	MaxValues int

	chunks []rawChunk
	last   Header
}

type rawChunk struct {
	index int
	data  []byte
}

func (r *Reader) max() int {
	if r.MaxPacketSize <= 0 {
		return DefaultMaxPacketSize
	}
	return min(r.MaxPacketSize, AbsMaxPacketSize)
}

// Header returns the header of the last main packet Next returned, which
// tells the peer's encoder and compressor.
func (r *Reader) Header() Header { return r.last }

// Pending reports how many raw chunks wait for their main packet.
func (r *Reader) Pending() int { return len(r.chunks) }

// Next consumes the first frame of buf. If buf does not yet hold a whole
// frame it returns n == 0 and ErrShortBuffer. A raw chunk is decompressed,
// stored, and reported as n > 0 with a nil packet. A main frame returns the
// decoded packet with the stored chunks substituted. The packet does not
// alias buf. Any other error is fatal for the connection.
func (r *Reader) Next(buf []byte) (p Packet, n int, err error) {
	size, h, err := FrameLen(buf, r.max())
	if err != nil {
		return nil, 0, err
	}
	if len(buf) < size {
		return nil, 0, ErrShortBuffer
	}
	payload := buf[HeaderSize:size]
	if h.Index > 0 {
		return nil, size, r.addChunk(h, payload)
	}
	p, err = r.decodeMain(h, payload)
	if err != nil {
		return nil, size, err
	}
	r.last = h
	return p, size, nil
}

func (r *Reader) addChunk(h Header, payload []byte) error {
	idx := int(h.Index)
	if r.NoChunks {
		return fmt.Errorf("frame: raw packet at index %d where none is allowed", idx)
	}
	for _, c := range r.chunks {
		if c.index == idx {
			return fmt.Errorf("frame: duplicate raw packet at index %d", idx)
		}
	}
	if len(r.chunks) >= MaxChunks {
		return fmt.Errorf("frame: too many raw packets: %d", len(r.chunks)+1)
	}
	var data []byte
	if h.Compression.Compressed() {
		var err error
		if data, err = Decompress(h.Compression, payload, r.max()); err != nil {
			return fmt.Errorf("frame: raw packet %d: %w", idx, err)
		}
	} else {
		data = slices.Clone(payload)
	}
	r.chunks = append(r.chunks, rawChunk{idx, data})
	return nil
}

func (r *Reader) decodeMain(h Header, payload []byte) (Packet, error) {
	chunks := r.chunks
	r.chunks = r.chunks[:0]
	data, err := Decompress(h.Compression, payload, r.max())
	if err != nil {
		return nil, err
	}
	v, err := h.Flags.Encoding().DecodeLimited(data, r.MaxValues)
	if err != nil {
		return nil, err
	}
	l, ok := v.([]any)
	if !ok || len(l) == 0 {
		return nil, &DecodeError{Encoding: h.Flags.Encoding(), Reason: fmt.Sprintf("invalid packet format: %T is not a non-empty list", v)}
	}
	for i, c := range chunks {
		if c.index >= len(l) {
			return nil, fmt.Errorf("frame: raw packet index %d beyond the %d elements of the packet", c.index, len(l))
		}
		l[c.index] = c.data
		chunks[i].data = nil
	}
	return Packet(l), nil
}

// StreamReader reads packets from a blocking io.Reader. It buffers at most
// one frame at a time. A peer that answers with a line of text instead of
// a frame (xpra's refusals before a hello is accepted) yields a
// *TextError with that line.
type StreamReader struct {
	Reader
	r   io.Reader
	buf []byte
}

// NewStreamReader reads frames from r with the given payload limit (≤ 0:
// DefaultMaxPacketSize).
func NewStreamReader(r io.Reader, maxPacketSize int) *StreamReader {
	return &StreamReader{Reader: Reader{MaxPacketSize: maxPacketSize}, r: r}
}

// ReadPacket returns the next complete packet. io.EOF means the stream
// ended cleanly between packets; io.ErrUnexpectedEOF that it ended inside
// one.
func (s *StreamReader) ReadPacket() (Packet, error) {
	for {
		if cap(s.buf) < HeaderSize {
			s.buf = make([]byte, HeaderSize, 4096)
		}
		s.buf = s.buf[:HeaderSize]
		if n, err := io.ReadFull(s.r, s.buf); err != nil {
			if n > 0 && s.buf[0] != Magic && s.Pending() == 0 {
				// A refusal shorter than a header.
				s.buf = s.buf[:n]
				if line, ok := s.textLine(); ok {
					return nil, &TextError{Line: line}
				}
			}
			if errors.Is(err, io.EOF) && s.Pending() > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		size, _, err := FrameLen(s.buf, s.max())
		if err != nil {
			if s.buf[0] != Magic && s.Pending() == 0 {
				if line, ok := s.textLine(); ok {
					return nil, &TextError{Line: line}
				}
			}
			return nil, err
		}
		if cap(s.buf) < size {
			s.buf = append(s.buf, make([]byte, size-len(s.buf))...)
		}
		s.buf = s.buf[:size]
		if _, err := io.ReadFull(s.r, s.buf[HeaderSize:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		p, _, err := s.Next(s.buf)
		if err != nil || p != nil {
			return p, err
		}
	}
}

// textLine reads the rest of a plain-text line whose first bytes are in
// s.buf: up to a newline, EOF or MaxTextLine bytes. It
// reports false when the bytes are not printable text.
func (s *StreamReader) textLine() (string, bool) {
	line := append([]byte(nil), s.buf...)
	one := make([]byte, 1)
	for len(line) < MaxTextLine && bytes.IndexByte(line, '\n') < 0 {
		n, err := s.r.Read(one)
		if n == 1 {
			line = append(line, one[0])
		}
		if err != nil {
			break
		}
	}
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	text := strings.TrimRight(string(line), "\r")
	for _, r := range text {
		if r == utf8.RuneError || (r < 0x20 && r != '\t') {
			return "", false
		}
	}
	return text, true
}
