package relay

import (
	"github.com/valyala/bytebufferpool"

	"github.com/xpraproxy/xpraproxy/frame"
)

// ownPackets hold the packets the proxy encodes itself — its pings,
// disconnects, and the control packets it rewrites (hello, info-response)
// — from encodeOwn to the Write that copies them out (gnet's Write and
// Writev copy what they do not send at once). A session keeps none
// between packets. bytebufferpool rather than a sync.Pool of 64 KiB
// buffers: these packets are small (a ping is 80 bytes), the pool
// calibrates its buffers to their sizes, and a fresh buffer per packet
// cost 5 allocations and 1.2 µs for a ping (docs/memory.md, "Pooled
// buffers").
var ownPackets bytebufferpool.Pool

// maxOwnPooled: a buffer grown past this (a large info-response) is left
// to the GC rather than kept, whether or not the pool has calibrated yet
// (before it has, bytebufferpool keeps every size).
const maxOwnPooled = 64 << 10

// encodeOwn encodes pkt with w into a buffer from ownPackets. The caller
// writes bb.B and gives it back with putOwn; bb.B is not valid after.
func encodeOwn(w frame.Writer, pkt frame.Packet) (*bytebufferpool.ByteBuffer, error) {
	bb := ownPackets.Get()
	var err error
	if bb.B, err = w.AppendPacket(bb.B[:0], pkt); err != nil {
		putOwn(bb)
		return nil, err
	}
	return bb, nil
}

// putOwn gives a buffer of encodeOwn back.
func putOwn(bb *bytebufferpool.ByteBuffer) {
	if cap(bb.B) <= maxOwnPooled {
		ownPackets.Put(bb)
	}
}
