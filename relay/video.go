package relay

import (
	"fmt"
	"strings"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/video"
)

// Proxy video (xpra's #504, spec §5.9): the proxy tells the server it can
// compress RGB itself; the server then sends draws of raw pixels marked
// `proxy: True` in their client options, which the proxy compresses with
// its encoder pool before they reach the client. Only sessions whose
// server accepted get here; their server→client pipe holds raw chunks
// until it knows whether their packet is such a draw.

// VideoPool is the encoder pool of proxy video as a session uses it
// (*gpu.Pool is one, set by cmd/ and privsep/). It is an interface, with
// the values in package video, so that the session core builds without
// the encoders' C libraries (CGO_ENABLED=0). Every method is safe from any
// goroutine: sessions of every loop share one pool.
type VideoPool interface {
	// Name names the back end, for info.
	Name() string
	// Encodings are what it makes ("h264"): offered to servers, and only
	// clients that decode one of them get proxy video.
	Encodings() []string
	// Submit queues f without blocking; done runs later, on a goroutine
	// of the pool's, with the result. A newer frame of a window may
	// replace an older one not yet started: done then runs once, for the
	// newer, listing the older's sequence in Replaced. When Submit returns
	// an error (a full pool) done never runs and the caller sends the
	// pixels through unencoded.
	Submit(f *video.Frame, done func(video.Result)) error
	// CloseWindow frees the encoder state of a window (xpra's
	// lost-window); a frame in flight finishes first.
	CloseWindow(key uint64)
}

// rgbFormats are the pixel layouts the back ends take (xpra only proxies
// encoders that read RGB directly).
var rgbFormats = []string{"BGRX", "BGRA", "RGBX", "RGBA"}

// VideoCaps are the hello keys that offer proxy video to the server: for
// each encoding of the pool (VideoPool.Encodings) and each RGB layout, one
// encoder spec with xpra's video_spec fields, boosted so that the server
// prefers it.
func VideoCaps(encodings []string) frame.Dict {
	encs := frame.NewDict()
	for _, e := range encodings {
		cs := frame.NewDict()
		for _, f := range rgbFormats {
			out := f
			if e == "h264" || e == "h265" {
				out = "YUV420P" // what the client's decoder gets
			}
			spec := frame.NewDict(
				"codec_type", "xpraproxy-"+e, "encoding", e,
				"input_colorspace", f, "output_colorspaces", []any{out},
				"has_lossless_mode", false,
				"quality", 60, "speed", 80, "setup_cost", 0, "cpu_cost", 10, "gpu_cost", 0,
				"score_boost", 50, "max_instances", 0,
				"min_w", 16, "min_h", 16, "max_w", 8192, "max_h", 8192,
				"width_mask", 0xFFFF, "height_mask", 0xFFFF, "can_scale", false)
			cs.Set(f, []any{spec})
		}
		encs.Set(e, cs)
	}
	return frame.NewDict("encoding.proxy.video", true, "encoding.proxy.video.encodings", encs)
}

// clientDecodes reports whether the client's hello lists one of the
// encodings: a client that cannot decode them gets no proxy video (the
// server then compresses for it as usual, and RGB is never re-encoded).
func clientDecodes(caps frame.Dict, encs []string) bool {
	for _, have := range append(caps.Texts("encodings"), caps.Texts("encodings.core")...) {
		for _, e := range encs {
			if have == e {
				return true
			}
		}
	}
	return false
}

// heldChunk is a raw chunk frame of a packet not yet seen, copied out of
// the socket buffer.
type heldChunk struct {
	index uint8
	frame []byte // header and payload
}

// holdChunk keeps a chunk frame until its main packet says what it is.
func (p *pipe) holdChunk(h frame.Header, whole []byte) {
	p.held = append(p.held, heldChunk{index: h.Index, frame: append([]byte(nil), whole...)})
}

// releaseHeld writes the held chunks unchanged (their packet is not a
// proxy-video draw).
func (p *pipe) releaseHeld() error {
	for _, c := range p.held {
		if err := p.write(c.frame); err != nil {
			return err
		}
	}
	clear(p.held)
	p.held = p.held[:0]
	return nil
}

// videoDraw handles a main packet of a video pipe; handled reports that it
// went to the encoder (nothing to forward now).
func (p *pipe) videoDraw(t *frame.Type, whole []byte) (bool, error) {
	if !t.Is("draw") {
		if t.Is("lost-window") {
			p.s.videoLostWindow(whole)
		}
		return false, p.releaseHeld()
	}
	var r frame.Reader
	r.MaxPacketSize = p.max
	pkt, _, err := r.Next(whole)
	if err != nil {
		return false, err
	}
	f, ok := p.s.videoFrame(pkt, p.held)
	if !ok {
		return false, p.releaseHeld()
	}
	clear(p.held)
	p.held = p.held[:0]
	if p.s.video.encoded+p.s.video.passed+p.s.video.pending == 0 {
		// The packet that proves the server sends proxy video.
		opts, _ := pkt[10].(frame.Dict)
		keys := make([]string, 0, len(opts))
		for _, kv := range opts {
			k, _ := frame.AsText(kv.Key)
			keys = append(keys, k)
		}
		enc, _ := frame.AsText(pkt[6])
		p.s.logger().Info("proxy video: first raw frame from the server", "window", f.Window&0xFFFFF,
			"size", fmt.Sprintf("%dx%d", f.Width, f.Height), "encoding", enc, "rgb_format", f.Format,
			"pixel_bytes", len(f.Pixels), "rowstride", f.Stride, "options", strings.Join(keys, ","))
	}
	p.s.submitVideo(f, pkt)
	return true, nil
}

// videoFrame recognises a proxy-video draw: ["draw", wid, x, y, w, h,
// encoding, pixels, seq, rowstride, {proxy: True, rgb_format, ...}] whose
// pixels came as raw chunk 7 (or inline).
func (s *Session) videoFrame(pkt frame.Packet, held []heldChunk) (*video.Frame, bool) {
	if len(pkt) < 11 {
		return nil, false
	}
	opts, _ := pkt[10].(frame.Dict)
	if proxy, _ := opts.Bool("proxy"); !proxy {
		return nil, false
	}
	wid, _ := frame.AsInt(pkt[1])
	w, _ := frame.AsInt(pkt[4])
	h, _ := frame.AsInt(pkt[5])
	seq, _ := frame.AsInt(pkt[8])
	stride, _ := frame.AsInt(pkt[9])
	if rs, ok := opts.Int("rowstride"); ok {
		stride = rs
	}
	format, _ := opts.Text("rgb_format")
	quality, _ := opts.Int("quality")
	var pixels []byte
	for _, c := range held {
		if c.index == 7 {
			ch, _, err := frame.FrameLen(c.frame, len(c.frame))
			if err == nil && ch == len(c.frame) {
				pixels = c.frame[frame.HeaderSize:]
			}
		}
	}
	if pixels == nil {
		pixels, _ = pkt[7].([]byte)
	}
	if len(held) > 1 || pixels == nil || w <= 0 || h <= 0 {
		return nil, false
	}
	return &video.Frame{Window: s.ID<<20 | uint64(wid)&0xFFFFF, Width: int(w), Height: int(h), Stride: int(stride),
		Format: strings.ToUpper(format), Pixels: pixels, Quality: int(quality), Seq: seq}, true
}

// submitVideo hands a frame to the pool; the result comes back on the
// session's loop. A full pool means plain RGB now.
func (s *Session) submitVideo(f *video.Frame, pkt frame.Packet) {
	s.video.pending++
	err := s.cfg.Video.Submit(f, func(r video.Result) {
		s.host.Post(func() { s.videoDone(r, pkt) })
	})
	if err != nil {
		s.video.pending--
		s.videoDone(video.Result{Frame: f, Err: err}, pkt)
	}
}

// videoDone writes the compressed draw to the client (on the loop). In a
// video pipe nothing is ever half written to the client, so any moment is
// a packet boundary. Frames the pool replaced are acknowledged to the
// server as the client would have.
func (s *Session) videoDone(r video.Result, pkt frame.Packet) {
	s.video.pending--
	if s.state != stateRelay || s.s2c == nil {
		return
	}
	p := s.s2c
	out := append(frame.Packet(nil), pkt...)
	if r.Err == nil {
		opts := frame.NewDict()
		for k, v := range r.Options {
			opts.Set(k, v)
		}
		if orig, ok := pkt[10].(frame.Dict); ok {
			for _, k := range []string{"timestamp", "rgb_format", "depth", "csc", "frame"} {
				if v, ok := orig.Get(k); ok && !opts.Has(k) {
					opts.Set(k, v)
				}
			}
		}
		out[6], out[7], out[9], out[10] = r.Encoding, frame.Compressed{Data: r.Data}, 0, opts
		s.video.encoded++
	} else {
		// xpra's passthrough: plain RGB, which every client decodes.
		format := strings.ToUpper(r.Frame.Format)
		enc := "rgb32"
		if len(format) == 3 {
			enc = "rgb24"
		}
		out[6], out[7], out[9] = enc, frame.Compressed{Data: r.Frame.Pixels}, int64(r.Frame.Stride)
		out[10] = frame.NewDict("rgb_format", format)
		s.video.passed++
		if s.video.passed == 1 {
			s.logger().Warn("proxy video: passing RGB through", "err", r.Err)
		}
	}
	// The pixels travel as a raw chunk; the small main packet needs no
	// compressor (each frame says how it is compressed).
	w := frame.Writer{Encoding: s.enc}
	b, err := w.AppendPacket(nil, out)
	if err != nil {
		s.disconnect(CloseInternal, "server error", fmt.Sprintf("cannot re-encode a draw: %v", err))
		return
	}
	if err := p.write(b); err != nil {
		s.relayError(p, err)
		return
	}
	wid, _ := frame.AsInt(pkt[1])
	for _, seq := range r.Replaced {
		s.ackToServer(frame.Packet{"damage-sequence", seq, wid, r.Frame.Width, r.Frame.Height, 0, ""})
	}
}

// ackToServer sends a packet of the proxy's own to the server at the next
// packet boundary of the client→server stream.
func (s *Session) ackToServer(pkt frame.Packet) {
	s.serverQueue = append(s.serverQueue, pkt)
	s.flushServerQueue()
}

func (s *Session) flushServerQueue() {
	c := s.c2s
	if len(s.serverQueue) == 0 || c == nil || c.remaining > 0 || c.midPacket || s.server == nil {
		return
	}
	w := s.serverWriter()
	for _, pkt := range s.serverQueue {
		if b, err := w.AppendPacket(nil, pkt); err == nil {
			c.write(b)
		}
	}
	clear(s.serverQueue)
	s.serverQueue = s.serverQueue[:0]
}

// videoLostWindow frees the encoder state of a window the server closed.
func (s *Session) videoLostWindow(whole []byte) {
	var r frame.Reader
	if pkt, _, err := r.Next(whole); err == nil && len(pkt) >= 2 {
		if wid, ok := frame.AsInt(pkt[1]); ok {
			s.cfg.Video.CloseWindow(s.ID<<20 | uint64(wid)&0xFFFFF)
		}
	}
}
