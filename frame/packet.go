package frame

import "fmt"

// Packet is a decoded xpra packet: [type, arg1, arg2, ...]. The type is a
// string (or []byte from rencode/bencode peers), or an int64 once the peer
// uses aliases.
type Packet []any

// Type returns the packet type as text, or "" if it is an alias or absent.
func (p Packet) Type() string {
	if len(p) == 0 {
		return ""
	}
	s, _ := AsText(p[0])
	return s
}

// Alias returns the integer packet type, if the peer sent an alias.
func (p Packet) Alias() (int64, bool) {
	if len(p) == 0 {
		return 0, false
	}
	a, ok := p[0].(int64)
	return a, ok
}

// String shows the type and argument count, never argument values, which
// may hold passwords.
func (p Packet) String() string {
	if a, ok := p.Alias(); ok {
		return fmt.Sprintf("packet alias %d (%d args)", a, len(p)-1)
	}
	return fmt.Sprintf("%q packet (%d args)", p.Type(), max(0, len(p)-1))
}

// Compressed is a packet argument that is sent as a raw chunk, like xpra's
// Compressed and LevelCompressed wrappers (pixels, cursors, file data).
type Compressed struct {
	Data []byte
	// Compression is NoCompression for data the application decodes itself
	// (pixels whose client options say how), or the algorithm and level
	// Data was compressed with, which the receiver's network layer undoes.
	Compression Compression
	// CanInline lets data up to Writer.InlineSize travel inside the main
	// packet. xpra 3.1 never inlines; v6 does by default.
	CanInline bool
}

// MaxChunks is how many raw chunks may wait for their main packet, as in
// xpra ("too many raw packets").
const MaxChunks = 3

// MaxChunkIndex bounds a raw chunk's index (xpra ≥ 6: "invalid packet
// index"); higher indexes also could not name an element of any real packet.
const MaxChunkIndex = 16
