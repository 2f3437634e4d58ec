package relay

// Bridge mode (docs/bridge.md): a pipe between peers of different xpra
// generations decodes each main packet, translates it with package
// bridge, and encodes it for the receiver. Raw chunks pass as chunks.
// Pass-through pipes have a nil bridge and never come here.

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/bridge"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
)

// bridgeValues bounds the values one bridged packet decodes to (a real
// 3.1.3 hello has about 6,000, a 76 KB info-response a few thousand):
// decoding amplification stays bounded after login too.
const bridgeValues = 1 << 18

// bridging is a pipe's bridge mode.
type bridging struct {
	tr  bridge.Translator
	out frame.Writer // the receiver's encoder and compressor
	// The compressions the receiver decompresses; a chunk compressed
	// otherwise is sent uncompressed.
	lz4, zlib bool
	// held is a 6.x server's hello for a 3.1 client, until the packet
	// after it shows whether an encodings packet is to be folded in.
	held    frame.Dict
	holding bool
	heldAt  time.Time
	comp    bridge.Compressor // the 3.1 client's, for its hello
	unknown map[string]bool   // types reported once
	// draws counts the draw packets by picture encoding (at most
	// maxCodings names), for the session's info.
	draws map[string]int64
}

// maxCodings bounds the encodings counted per pipe: a peer names them.
const maxCodings = 16

// info describes the bridge of a server→client pipe.
func (b *bridging) info() frame.Dict {
	draws := frame.Dict{}
	for k, n := range b.draws {
		draws.Set(k, n)
	}
	return frame.NewDict("server", b.tr.From.String(), "client", b.tr.To.String(), "draws", draws)
}

// countDraw notes a draw packet's picture encoding.
func (b *bridging) countDraw(pkt frame.Packet) {
	if len(pkt) < 7 {
		return
	}
	coding, ok := frame.AsText(pkt[6])
	if !ok || len(coding) > 32 {
		return
	}
	if _, seen := b.draws[coding]; !seen && len(b.draws) >= maxCodings {
		return
	}
	if b.draws == nil {
		b.draws = map[string]int64{}
	}
	b.draws[coding]++
}

// encodeBuffers hold a bridged packet while it is encoded and written,
// and a main packet compressed for the client (rewrite); a pipe keeps
// none between packets. A sync.Pool, not bytebufferpool: these packets
// mix small and large sizes, and bytebufferpool drops the large ones
// (docs/memory.md, "Pooled buffers").
var encodeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// newBridging is the bridge mode of a pipe from a peer of from to a peer
// of to; comp is what that receiver gets (3.1: lz4 or zlib); bencode: the
// receiver is a 3.1 client that speaks only bencode (the 3.1 HTML5
// client).
func newBridging(from, to bridge.Gen, comp bridge.Compressor, uncompressed, bencode bool) *bridging {
	b := &bridging{tr: bridge.Translator{From: from, To: to}, comp: comp}
	b.out.Encoding = to.Encoding()
	if bencode && to == bridge.Gen31 {
		b.out.Encoding = frame.Bencode
	}
	switch {
	case uncompressed:
		b.out.Compression = frame.NoCompression
	case to == bridge.Gen31 && comp == bridge.Zlib:
		b.out.Compression = frame.AlgoZlib.WithLevel(1)
		b.zlib = true
	default:
		b.out.Compression = frame.AlgoLZ4.WithLevel(1)
		b.lz4 = true
		b.zlib = to == bridge.Gen31 // every 3.1 peer has zlib
	}
	if to == bridge.Gen6 {
		b.out.Flush = true
	}
	return b
}

// accepts reports whether the receiver decompresses c.
func (b *bridging) accepts(c frame.Compression) bool {
	switch {
	case !c.Compressed():
		return true
	case c.Algo() == frame.AlgoLZ4:
		return b.lz4
	case c.Algo() == frame.AlgoZlib:
		return b.zlib
	}
	return false
}

// bridgeFrame handles one whole frame of a bridged pipe.
func (p *pipe) bridgeFrame(h frame.Header, whole []byte) (err error) {
	// The translators walk values a stranger chose; a bug there (one was
	// found: a hello's "keymap" that was no dict) must end this session,
	// not the process. Pass-through pipes never come here.
	defer func() {
		if r := recover(); r != nil {
			p.s.logger().Error("bridging failed: a bug; the session ends", "user", p.s.logUser(),
				"panic", logsafe.String(fmt.Sprint(r)), "stack", string(debug.Stack()))
			err = bridgeError{fmt.Errorf("relay: bridging failed (an internal error)")}
		}
	}()
	b := p.bridge
	payload := whole[frame.HeaderSize:]
	if h.Index > 0 {
		if b.holding {
			if err := p.sendHeldHello(nil); err != nil {
				return err
			}
		}
		p.midPacket = true
		if b.accepts(h.Compression) {
			return p.write(whole)
		}
		data, err := frame.Decompress(h.Compression, payload, p.max)
		if err != nil {
			return err
		}
		h.Compression = frame.NoCompression
		return p.writeFrame(h, data)
	}
	p.midPacket = false
	p.Packets++
	t, err := frame.PeekType(h, payload)
	if err != nil {
		return err
	}
	p.observe(&t)
	data := payload
	if h.Compression.Compressed() {
		if data, err = frame.Decompress(h.Compression, payload, p.max); err != nil {
			return err
		}
	}
	v, err := h.Flags.Encoding().DecodeLimited(data, bridgeValues)
	if err != nil {
		return err
	}
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return fmt.Errorf("relay: bridged packet is a %T, not a list", v)
	}
	pkt := frame.Packet(list)
	if b.holding {
		if t.Is("encodings") && len(pkt) > 1 {
			enc, _ := pkt[1].(frame.Dict)
			return p.sendHeldHello(enc)
		}
		if err := p.sendHeldHello(nil); err != nil {
			return err
		}
	}
	switch {
	case t.Is("ping_echo") && p.s.ping != nil && p.ownEcho(pkt):
		return nil
	case t.Is("hello"):
		if p.toServer || len(pkt) < 2 {
			p.s.logger().Warn("client sent another hello while relaying; dropped", "user", p.s.logUser())
			return nil
		}
		caps, _ := pkt[1].(frame.Dict)
		hello := b.hello(ClientHello(caps), nil)
		if err := p.s.addClientCipher(&hello); err != nil {
			return err
		}
		return p.bridgeWrite(frame.Packet{"hello", hello})
	}
	out, known, err := b.tr.Packet(pkt)
	if err != nil {
		return bridgeError{err} // a packet that decoded but does not translate
	}
	if t.Is("draw") {
		b.countDraw(pkt)
	}
	if !known {
		p.reportUnknown(out.Type())
	}
	if p.inspects(&t) {
		return p.handle(h, out)
	}
	return p.bridgeWrite(out)
}

// bridgeWrite encodes pkt for the receiver and writes it.
func (p *pipe) bridgeWrite(pkt frame.Packet) error {
	if p.bridge.out.Encoding == frame.Bencode {
		pkt = bridge.ForBencode(pkt).(frame.Packet)
	}
	bp := encodeBuffers.Get().(*[]byte)
	out, err := p.bridge.out.AppendPacket((*bp)[:0], pkt)
	if err != nil {
		// What was translated cannot be encoded for the receiver.
		err = bridgeError{err}
	} else {
		err = p.write(out)
	}
	if cap(out) <= 1<<20 {
		*bp = out[:0]
		encodeBuffers.Put(bp)
	}
	if err != nil {
		return fmt.Errorf("relay: bridged %s: %w", pkt.Type(), err)
	}
	return nil
}

// sendHeldHello sends the server's hello to a 3.1 client, with the
// caps of the encodings packet that followed it (nil: none did).
func (p *pipe) sendHeldHello(encodings frame.Dict) error {
	b := p.bridge
	caps := b.held
	b.held, b.holding = nil, false
	hello := b.hello(caps, encodings)
	if err := p.s.addClientCipher(&hello); err != nil {
		return err
	}
	return p.bridgeWrite(frame.Packet{"hello", hello})
}

// hello is the server's hello (and the 6.x encodings packet's caps, nil:
// none) translated for the client.
func (b *bridging) hello(caps, encodings frame.Dict) frame.Dict {
	out := bridge.ServerHello(caps, encodings, b.tr.From, b.tr.To, b.comp)
	if b.out.Encoding == frame.Bencode {
		out = bridge.BencodeHello(out)
	}
	return out
}

// heldTooLong sends a held hello when no packet followed it within
// heldHelloWait (a server that sends no encodings packet); from Sweep.
func (p *pipe) heldTooLong(now time.Time) error {
	if b := p.bridge; b != nil && b.holding && now.Sub(b.heldAt) > heldHelloWait {
		return p.sendHeldHello(nil)
	}
	return nil
}

// heldHelloWait is how long a 6.x server's hello waits for the encodings
// packet that 6.x sends right after it.
const heldHelloWait = time.Second

// reportUnknown logs a packet type the tables do not know, once per pipe.
func (p *pipe) reportUnknown(name string) {
	b := p.bridge
	if b.unknown[name] {
		return
	}
	if b.unknown == nil {
		b.unknown = map[string]bool{}
	}
	if len(b.unknown) < 64 && len(name) <= 64 {
		b.unknown[name] = true
		p.s.logger().Info("bridging a packet type the tables do not know (best effort)", "type", logsafe.String(name),
			"from", b.tr.From.String(), "to", b.tr.To.String())
	}
}

// genOf is the generation a peer with these encoders is, for bridging
// (0: it speaks both, or says nothing).
func genOf(e Encoders) bridge.Gen {
	switch {
	case e == EncRencodePlus:
		return bridge.Gen6
	case e != 0 && e&EncRencodePlus == 0:
		return bridge.Gen31
	}
	return 0
}

// serverWriter writes the proxy's own packets to the server: in the
// client's encoding, or the server's when bridging.
func (s *Session) serverWriter() frame.Writer {
	if s.c2s != nil && s.c2s.bridge != nil {
		return frame.Writer{Encoding: s.c2s.bridge.out.Encoding}
	}
	return frame.Writer{Encoding: s.enc}
}

// bridgeOff reports whether the session option bridge=no is set.
func bridgeOff(opts []authn.Option) bool {
	for _, o := range opts {
		if o.Key == "bridge" && (o.Value == "no" || o.Value == "false" || o.Value == "0" || o.Value == "off") {
			return true
		}
	}
	return false
}
