package relay

import (
	"errors"
	"fmt"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
)

// inspectLimit is the largest main packet held whole to learn its type;
// larger ones (never control packets in practice) are cut through.
const inspectLimit = 1 << 20

// pipe relays one direction. At each frame boundary it validates the
// header; main packets up to inspectLimit are classified by type without
// decoding; everything else is written to dst as it arrives.
type pipe struct {
	s        *Session
	src, dst Conn
	max      int

	remaining int      // bytes of the current cut-through frame still to copy
	need      int      // size of the whole frame the next scan waits for
	iov       [][]byte // pass-through regions gathered for one writev
	reader    frame.Reader

	// The small fields together, so that an idle session's two pipes
	// fit a smaller size class.
	toServer bool
	curIndex uint8
	// midPacket: raw chunks went out and their main packet has not, so
	// nothing of the proxy's own may be sent yet.
	midPacket bool
	paused    bool // dst went over highWater; its source is not read (flow.go)
	// compress: see link. video: a server→client pipe of a proxy-video
	// session, which holds raw chunks (held) until their packet shows
	// whether it is a draw to encode.
	compress frame.Compression
	video    bool

	// link says whether the proxy↔server link is uncompressed; then
	// client→server frames are decompressed and server→client main
	// packets compressed with `compress` for the client.
	link *LinkOptions
	held []heldChunk
	// bridge translates between generations (bridge.go); nil: the
	// peers speak the same and bytes pass through.
	bridge *bridging

	Bytes, Packets int64
	reported       TrafficTotals // as of the last TrafficDelta

	// Latency, measured passively: when a ping passed through in this
	// direction (unix ns, 0: none pending), and the round trip of the
	// last one, whose echo came back through the other pipe.
	pingAt int64
	rtt    time.Duration
	// pausedAt is when the pipe paused (unix ns): a destination that
	// reads nothing for StallTimeout is cut.
	pausedAt int64
}

// name says which direction the pipe relays, for errors.
func (p *pipe) name() string {
	if p.toServer {
		return "client→server"
	}
	return "server→client"
}

// observe notes pings and their echoes for the latency figures.
func (p *pipe) observe(t *frame.Type) {
	switch {
	case t.Is("ping"):
		p.pingAt = time.Now().UnixNano()
	case t.Is("ping_echo"):
		other := p.s.c2s
		if p.toServer {
			other = p.s.s2c
		}
		if other != nil && other.pingAt != 0 {
			other.rtt = time.Duration(time.Now().UnixNano() - other.pingAt)
			other.pingAt = 0
		}
	}
}

// transforms reports whether every frame must be held whole and rewritten.
func (p *pipe) transforms() bool { return p.link.Uncompressed() }

// scanWindow bounds how much one pump step looks at: at most one writev's
// worth, so that a source backed up behind a slow peer is moved in steps.
const scanWindow = 1 << 20

// pump forwards what the source has buffered. Each step peeks at the
// buffered bytes, walks their frames, gathers every pass-through region
// (cut-through chunks, main packets of uninteresting types) into one
// writev, and discards what it consumed: one read event, one write
// syscall, no copy.
func (p *pipe) pump() error {
	for !p.paused && p.s.state == stateRelay {
		avail := p.src.InboundBuffered()
		if avail == 0 {
			return nil
		}
		window := min(avail, max(scanWindow, p.need))
		buf, err := p.src.Peek(window)
		if err != nil {
			return err
		}
		n, err := p.scan(buf)
		if n > 0 {
			p.src.Discard(n)
		}
		if err != nil {
			return err
		}
		if n == 0 && (p.need == 0 || p.need > avail) {
			return nil // an incomplete frame: wait for more
		}
	}
	return nil
}

// scan consumes frames from buf and returns how many bytes it used. p.need
// is set to the size of a whole frame it must wait for.
func (p *pipe) scan(buf []byte) (int, error) {
	p.iov = p.iov[:0]
	p.need = 0
	off := 0
	// A destination already backed up gets its bytes a step at a time,
	// so that it never holds more than the high-water mark and a step.
	step := len(buf)
	if p.dst.OutboundBuffered() > 0 {
		step = flushStep
	}
	gathered := 0
	for off < len(buf) && !p.paused {
		if gathered >= step {
			if err := p.flush(); err != nil {
				return off, err
			}
			gathered = 0
			continue
		}
		if p.remaining > 0 {
			n := min(len(buf)-off, p.remaining, step-gathered)
			gathered += n
			p.iov = append(p.iov, buf[off:off+n])
			off += n
			p.remaining -= n
			if p.remaining == 0 && p.curIndex == 0 {
				p.midPacket = false
			}
			continue
		}
		if len(buf)-off < frame.HeaderSize {
			break
		}
		size, h, err := frame.FrameLen(buf[off:], p.max)
		if err != nil {
			return off, errors.Join(err, p.flush())
		}
		if !p.transforms() && !p.video && p.bridge == nil && (h.Index > 0 || size > inspectLimit) {
			p.remaining = size // cut through: forward as bytes arrive
			p.curIndex = h.Index
			if h.Index == 0 {
				p.Packets++
			} else {
				p.midPacket = true
			}
			continue
		}
		if len(buf)-off < size {
			p.need = size
			break
		}
		whole := buf[off : off+size]
		if p.bridge != nil {
			if err := p.flush(); err != nil {
				return off, err
			}
			err := p.bridgeFrame(h, whole)
			off += size
			if err != nil || p.s.state != stateRelay {
				return off, err
			}
			continue
		}
		if p.video {
			if h.Index > 0 {
				p.holdChunk(h, whole)
				off += size
				continue
			}
			t, err := frame.PeekType(h, whole[frame.HeaderSize:])
			if err != nil {
				return off, errors.Join(err, p.flush())
			}
			if t.Is("draw") || t.Is("lost-window") || len(p.held) > 0 {
				if err := p.flush(); err != nil {
					return off, err
				}
				handled, err := p.videoDraw(&t, whole)
				if err != nil {
					return off, err
				}
				if handled {
					p.Packets++
					off += size
					continue
				}
			}
		}
		p.midPacket = h.Index > 0
		if !p.transforms() {
			t, err := frame.PeekType(h, whole[frame.HeaderSize:])
			if err != nil {
				return off, errors.Join(err, p.flush())
			}
			p.observe(&t)
			if !p.inspects(&t) {
				p.Packets++
				p.iov = append(p.iov, whole)
				gathered += size
				off += size
				continue
			}
		}
		// A packet to look at or rewrite: what precedes it goes first.
		if err := p.flush(); err != nil {
			return off, err
		}
		err = p.frame(h, whole)
		off += size
		if err != nil || p.s.state != stateRelay {
			return off, err
		}
	}
	return off, p.flush()
}

// flush writes the gathered regions with one writev.
func (p *pipe) flush() error {
	if len(p.iov) == 0 {
		return nil
	}
	n := 0
	for _, b := range p.iov {
		n += len(b)
	}
	var err error
	if len(p.iov) == 1 {
		_, err = p.dst.Write(p.iov[0]) // writev's iovec setup is not free
	} else {
		_, err = p.dst.Writev(p.iov)
	}
	clear(p.iov) // the slices point into the source's buffer
	p.iov = p.iov[:0]
	if err != nil {
		return fmt.Errorf("relay: %s write: %w", p.name(), err)
	}
	p.Bytes += int64(n)
	p.checkWater()
	return nil
}

// finishPacket forwards what is already buffered up to the end of the
// packet in progress, so that a packet of the proxy's own (a disconnect)
// can follow without corrupting the stream. It reports whether the stream
// is at a packet boundary; when the rest has not arrived it is not, and
// what did arrive has gone out (a later call goes on from there).
func (p *pipe) finishPacket() bool {
	if p.src == nil {
		return true
	}
	if p.bridge != nil {
		return !p.midPacket // frames go out whole; chunks without their packet cannot be finished
	}
	for p.remaining > 0 || p.midPacket {
		avail := p.src.InboundBuffered()
		if p.remaining > 0 {
			n := min(avail, p.remaining)
			if n == 0 {
				return false
			}
			buf, err := p.src.Peek(n)
			if err != nil {
				return false
			}
			p.dst.Write(buf)
			p.src.Discard(n)
			p.Bytes += int64(n)
			p.remaining -= n
			if p.remaining == 0 && p.curIndex == 0 {
				p.midPacket = false
			}
			continue
		}
		if avail < frame.HeaderSize {
			return false
		}
		hdr, err := p.src.Peek(frame.HeaderSize)
		if err != nil {
			return false
		}
		size, h, err := frame.FrameLen(hdr, p.max)
		if err != nil {
			return false
		}
		p.remaining, p.curIndex = size, h.Index
		if h.Index == 0 {
			p.Packets++
		}
	}
	return true
}

// write forwards bytes and pauses the pipe when dst backs up.
func (p *pipe) write(b []byte) error {
	if _, err := p.dst.Write(b); err != nil {
		return fmt.Errorf("relay: %s write: %w", p.name(), err)
	}
	p.Bytes += int64(len(b))
	p.checkWater()
	return nil
}

// frame handles one whole frame (header included in buf) that may need
// rewriting: control packets, and every frame on a transformed link.
func (p *pipe) frame(h frame.Header, buf []byte) error {
	payload := buf[frame.HeaderSize:]
	if h.Index > 0 {
		return p.rewrite(h, payload, buf)
	}
	p.Packets++
	t, err := frame.PeekType(h, payload)
	if err != nil {
		return err
	}
	if p.transforms() {
		p.observe(&t)
	}
	if !p.inspects(&t) {
		return p.rewrite(h, payload, buf)
	}
	pkt, _, err := p.reader.Next(buf)
	if err != nil {
		return err
	}
	if t.Is("ping_echo") {
		if p.ownEcho(pkt) {
			return nil // the proxy's own: measured, not forwarded
		}
		return p.rewrite(h, payload, buf) // a peer's: untouched
	}
	return p.handle(h, pkt)
}

func (p *pipe) inspects(t *frame.Type) bool {
	if t.Is("disconnect") || t.Is("hello") {
		return true
	}
	if p.s.ping != nil && t.Is("ping_echo") {
		return true // maybe the answer to one of the proxy's own pings
	}
	return !p.toServer && (t.Is("info-response") || t.Is("challenge"))
}

// rewrite forwards a frame, changing its compression when the link
// options say so; otherwise the bytes go out untouched.
func (p *pipe) rewrite(h frame.Header, payload, whole []byte) error {
	switch {
	case p.transforms() && p.toServer && h.Compression.Compressed():
		data, err := frame.Decompress(h.Compression, payload, p.max)
		if err != nil {
			return err
		}
		h.Compression = frame.NoCompression
		return p.writeFrame(h, data)
	case p.transforms() && !p.toServer && h.Index == 0 && !h.Compression.Compressed() &&
		p.compress.Compressed() && len(payload) > frame.DefaultMinCompressSize:
		// Header and compressed payload in one pooled buffer, one write.
		bp := encodeBuffers.Get().(*[]byte)
		c, out, err := frame.AppendCompress(append((*bp)[:0], make([]byte, frame.HeaderSize)...), p.compress, payload)
		if err == nil {
			h.Compression, h.Size = c, uint32(len(out)-frame.HeaderSize)
			h.Put(out)
			err = p.write(out)
		}
		if cap(out) <= 1<<20 {
			*bp = out[:0]
			encodeBuffers.Put(bp)
		}
		return err
	}
	return p.write(whole)
}

func (p *pipe) writeFrame(h frame.Header, payload []byte) error {
	h.Size = uint32(len(payload))
	var hdr [frame.HeaderSize]byte
	h.Put(hdr[:])
	if err := p.write(hdr[:]); err != nil {
		return err
	}
	return p.write(payload)
}

// handle acts on a decoded control packet.
func (p *pipe) handle(h frame.Header, pkt frame.Packet) error {
	w := frame.Writer{Encoding: h.Flags.Encoding(), Compression: h.Compression}
	switch {
	case p.bridge != nil:
		// writeHandled encodes for the receiver.
	case p.transforms():
		w.Compression = frame.NoCompression
		if !p.toServer {
			w.Compression = p.compress
		}
	}
	switch pkt.Type() {
	case "disconnect":
		if err := p.writeHandled(w, pkt); err != nil {
			return err
		}
		s := p.s
		if p.toServer {
			s.logger().Info("client disconnected", "user", s.logUser(), "reason", logsafe.String(disconnectText(pkt)))
			s.ending(CloseClientGone, "client disconnected", disconnectText(pkt))
			s.closeServer("client request")
			s.beginClose()
		} else {
			s.logger().Info("server disconnected the client", "user", s.logUser(), "reason", logsafe.String(disconnectText(pkt)))
			s.ending(CloseServerGone, "server disconnected", disconnectText(pkt))
			s.server.Close()
			s.server = nil
			s.beginClose()
		}
		return nil
	case "hello":
		if p.toServer {
			// xpra's proxy drops a client hello once relaying.
			p.s.logger().Warn("client sent another hello while relaying; dropped", "user", p.s.logUser())
			return nil
		}
		caps, _ := pkt[1].(frame.Dict)
		hello := ClientHello(caps)
		if err := p.s.addClientCipher(&hello); err != nil {
			return err
		}
		pkt = frame.Packet{"hello", hello}
	case "info-response":
		if len(pkt) >= 2 {
			if info, ok := pkt[1].(frame.Dict); ok {
				pkt[1] = p.s.addInfo(info)
			}
		}
	case "challenge":
		// A server challenge after the hello cannot be answered by the
		// client through us: end the session cleanly.
		p.s.disconnect(CloseServerError, "authentication error", "the server sent a challenge while relaying")
		return nil
	}
	return p.writeHandled(w, pkt)
}

// writeHandled writes a packet handle saw, with w, or as any bridged
// packet in bridge mode.
func (p *pipe) writeHandled(w frame.Writer, pkt frame.Packet) error {
	if p.bridge != nil {
		return p.bridgeWrite(pkt)
	}
	bb, err := encodeOwn(w, pkt)
	if err != nil {
		return err
	}
	err = p.write(bb.B)
	putOwn(bb)
	return err
}
