package relay

// A relaying session as a value (docs/upgrade.md, "Step 2"): what one
// process writes when it hands a live session to another (an upgrade's
// successor) and what that process reads to rebuild it and carry on.
// Nothing waits for a packet boundary: each pipe's place in its stream
// travels with it. The value is read from another process, so the
// decoder bounds every length and checks every field before a session is
// built from it.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/xpraproxy/xpraproxy/bridge"
	"github.com/xpraproxy/xpraproxy/frame"
)

// StateVersion is the layout of SessionState this build writes and
// reads; a successor that reads another refuses the session, which then
// drains in the old process.
const StateVersion = 1

// Bounds of a decoded SessionState: the whole encoded value, each text
// field, the proxy's own packets queued for the server.
const (
	MaxStateSize    = 64 << 10
	maxStateText    = 1024
	maxStateQueue   = 16 << 10
	maxStateUUID    = 64
	maxStateCodings = maxCodings
)

// SessionState is a relaying session as it is handed over. Secrets stay
// out: the target's password only answered a challenge at connect time.
type SessionState struct {
	Version   int    `json:"v"`
	ID        uint64 `json:"id"` // the old process's; the new one numbers it again
	User      string `json:"user"`
	Peer      string `json:"peer"`
	Source    string `json:"src"`
	Display   string `json:"display,omitempty"` // redacted, as info shows it
	Target    string `json:"target,omitempty"`  // redacted
	Pool      string `json:"pool,omitempty"`
	Transport string `json:"transport,omitempty"` // the access record's
	// Claimed is the xpra version the proxy claims to the client.
	Claimed string `json:"claimed,omitempty"`
	// Encoding is the client's packet encoder; ServerGen the server's
	// generation (0: unknown).
	Encoding  frame.Encoding `json:"enc"`
	ServerGen bridge.Gen     `json:"server_gen,omitempty"`
	// Link is the client's transport as the accepting process found it
	// (WebSocket framing, masking); a TLS link is never handed over.
	Link Link `json:"link"`
	// Level is LinkOptions.Level: the proxy↔server compression level,
	// -1 when the client's hello chose it; 0 makes the pipes rewrite
	// every frame.
	Level   int       `json:"level"`
	Started time.Time `json:"started"`
	Active  time.Time `json:"active"`
	// C2S and S2C are the two pipes' places in their streams.
	C2S PipeState `json:"c2s"`
	S2C PipeState `json:"s2c"`
	// Ping is the proxy's own pings' state; nil: pings off.
	Ping *PingState `json:"ping,omitempty"`
	// ServerQueue is the proxy's own packets for the server not yet sent
	// (they wait for a packet boundary), as frames in the server's encoder.
	ServerQueue []byte `json:"server_queue,omitempty"`
}

// PipeState is one direction's place in its stream.
type PipeState struct {
	// Remaining is the bytes of the cut-through frame in progress still
	// to copy, CurIndex that frame's chunk index; MidPacket: raw chunks
	// went out and their main packet has not.
	Remaining int   `json:"remaining,omitempty"`
	CurIndex  uint8 `json:"index,omitempty"`
	MidPacket bool  `json:"mid,omitempty"`
	// Compress is the compression of main packets for the client when
	// the server link is uncompressed (Level 0).
	Compress       frame.Compression `json:"compress,omitempty"`
	Bytes, Packets int64
	RTT            time.Duration `json:"rtt,omitempty"`
	Bridge         *BridgeState  `json:"bridge,omitempty"`
}

// BridgeState is a bridged pipe's translator and receiver's encoder.
type BridgeState struct {
	From, To    bridge.Gen
	Encoding    frame.Encoding
	Compression frame.Compression
	Flush       bool `json:"flush,omitempty"`
	LZ4         bool `json:"lz4,omitempty"`
	Zlib        bool `json:"zlib,omitempty"`
	// Comp is the 3.1 client's compressor, for a later server hello.
	Comp  bridge.Compressor `json:"comp"`
	Draws map[string]int64  `json:"draws,omitempty"`
}

// PingState is the proxy's own pings.
type PingState struct {
	UUID         []byte `json:"uuid"`
	ClientEcho   bool   `json:"client_echo,omitempty"`
	ServerEcho   bool   `json:"server_echo,omitempty"`
	ClientRTT    time.Duration
	ServerRTT    time.Duration
	EchoesHidden int64
}

// ErrNotHandable is a session that cannot be handed over now; it stays
// in its process (and drains there at an upgrade).
var ErrNotHandable = errors.New("relay: session cannot be handed over")

// Handable reports why the session cannot be handed over at the moment,
// or nil when it can: it relays, over no TLS and to a plain server
// socket (no TLS bridge, no WebSocket framing: their state lives here),
// without proxy video (whose encoder state lives here), and no bridged
// hello is held back. Loop only.
func (s *Session) Handable() error {
	switch {
	case s.state != stateRelay || s.c2s == nil || s.s2c == nil || s.server == nil:
		return fmt.Errorf("%w: not relaying (%s)", ErrNotHandable, s.state)
	case s.link != nil && s.link.TLS:
		return fmt.Errorf("%w: its client link is TLS", ErrNotHandable)
	case s.serverFramed:
		return fmt.Errorf("%w: its server link is TLS or WebSocket", ErrNotHandable)
	case s.aes != nil || isCipher(s.server):
		// The cipher streams live here (docs/aes.md); they could travel
		// as a root handoff's do (Encryptor.Resume), not done yet.
		return fmt.Errorf("%w: a link is AES-encrypted", ErrNotHandable)
	case s.video != nil || s.s2c.video || len(s.s2c.held) > 0:
		return fmt.Errorf("%w: proxy video encodes it here", ErrNotHandable)
	case s.s2c.bridge != nil && s.s2c.bridge.holding:
		return fmt.Errorf("%w: the server's hello is held for the bridge", ErrNotHandable)
	case len(s.serverQueue) > 0 && s.serverQueueBytes() > maxStateQueue:
		return fmt.Errorf("%w: too much queued for the server", ErrNotHandable)
	}
	return nil
}

// serverQueueBytes encodes the proxy's own packets queued for the server.
func (s *Session) serverQueueBytes() int {
	b, _ := s.encodeServerQueue()
	return len(b)
}

func (s *Session) encodeServerQueue() ([]byte, error) {
	var out []byte
	w := s.serverWriter()
	for _, pkt := range s.serverQueue {
		var err error
		if out, err = w.AppendPacket(out, pkt); err != nil {
			return nil, fmt.Errorf("relay: session state: queued %s: %w", pkt.Type(), err)
		}
	}
	return out, nil
}

// State is the session as a value, for a handover. It fails (wrapping
// ErrNotHandable) when Handable does. Loop only.
func (s *Session) State() (*SessionState, error) {
	if err := s.Handable(); err != nil {
		return nil, err
	}
	queue, err := s.encodeServerQueue()
	if err != nil {
		return nil, err
	}
	st := &SessionState{Version: StateVersion, ID: s.ID, User: s.user, Peer: s.peer, Source: s.src,
		Display: s.display, Target: s.target, Pool: s.pool, Transport: s.transport, Claimed: s.claimed,
		Encoding: s.enc, ServerGen: s.serverGen, Level: -1, Started: s.started, Active: s.active,
		C2S: s.c2s.state(), S2C: s.s2c.state(), ServerQueue: queue}
	if s.link != nil {
		st.Link = *s.link
	}
	if s.c2s.link != nil {
		st.Level = s.c2s.link.Level
	}
	if pg := s.ping; pg != nil {
		st.Ping = &PingState{UUID: bytes.Clone(pg.uuid), ClientEcho: pg.clientEcho, ServerEcho: pg.serverEcho,
			ClientRTT: pg.clientRTT, ServerRTT: pg.serverRTT, EchoesHidden: pg.echoesHidden}
	}
	return st, nil
}

func (p *pipe) state() PipeState {
	ps := PipeState{Remaining: p.remaining, CurIndex: p.curIndex, MidPacket: p.midPacket,
		Compress: p.compress, Bytes: p.Bytes, Packets: p.Packets, RTT: p.rtt}
	if p.remaining == 0 {
		ps.CurIndex = 0 // the index of a frame already copied means nothing
	}
	if b := p.bridge; b != nil {
		bs := &BridgeState{From: b.tr.From, To: b.tr.To, Encoding: b.out.Encoding, Compression: b.out.Compression,
			Flush: b.out.Flush, LZ4: b.lz4, Zlib: b.zlib, Comp: b.comp}
		if len(b.draws) > 0 {
			bs.Draws = make(map[string]int64, len(b.draws))
			for k, n := range b.draws {
				bs.Draws[k] = n
			}
		}
		ps.Bridge = bs
	}
	return ps
}

// Encode is the state as it travels: JSON, at most MaxStateSize bytes.
func (st *SessionState) Encode() ([]byte, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("relay: session state: %w", err)
	}
	if len(b) > MaxStateSize {
		return nil, fmt.Errorf("relay: session state: %d bytes, more than %d", len(b), MaxStateSize)
	}
	return b, nil
}

// DecodeState reads a state another process wrote, and checks it:
// every length bounded, every enumerated value known, each pipe's place
// possible under the packet size bounds.
func DecodeState(b []byte) (*SessionState, error) {
	if len(b) > MaxStateSize {
		return nil, fmt.Errorf("relay: session state: %d bytes, more than %d", len(b), MaxStateSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var st SessionState
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("relay: session state: %w", err)
	}
	if dec.More() {
		return nil, errors.New("relay: session state: data after the value")
	}
	if err := st.check(); err != nil {
		return nil, fmt.Errorf("relay: session state: %w", err)
	}
	return &st, nil
}

// check validates a decoded state.
func (st *SessionState) check() error {
	if st.Version != StateVersion {
		return fmt.Errorf("version %d, this build reads %d", st.Version, StateVersion)
	}
	for name, v := range map[string]string{"user": st.User, "peer": st.Peer, "src": st.Source, "display": st.Display,
		"target": st.Target, "pool": st.Pool, "transport": st.Transport, "claimed": st.Claimed,
		"link transport": st.Link.Transport} {
		if len(v) > maxStateText {
			return fmt.Errorf("%s: %d bytes, more than %d", name, len(v), maxStateText)
		}
	}
	switch {
	case st.Encoding > frame.RencodePlus:
		return fmt.Errorf("client encoding %d", st.Encoding)
	case st.ServerGen > bridge.Gen6:
		return fmt.Errorf("server generation %d", st.ServerGen)
	case st.Link.TLS:
		return errors.New("a TLS link cannot be handed over")
	case st.Link.Transport != "" && st.Link.Transport != "ws":
		return fmt.Errorf("link transport %q", st.Link.Transport)
	case st.Level < -1 || st.Level > 15:
		return fmt.Errorf("compression level %d", st.Level)
	case len(st.ServerQueue) > maxStateQueue:
		return fmt.Errorf("server queue: %d bytes, more than %d", len(st.ServerQueue), maxStateQueue)
	}
	if p := st.Ping; p != nil && (len(p.UUID) == 0 || len(p.UUID) > maxStateUUID || p.EchoesHidden < 0) {
		return errors.New("ping state")
	}
	for i, ps := range [...]*PipeState{&st.C2S, &st.S2C} {
		if err := ps.check(); err != nil {
			return fmt.Errorf("%s: %w", [...]string{"c2s", "s2c"}[i], err)
		}
	}
	if (st.C2S.Bridge == nil) != (st.S2C.Bridge == nil) {
		return errors.New("one pipe bridged, the other not")
	}
	return nil
}

func (ps *PipeState) check() error {
	switch {
	case ps.Remaining < 0 || ps.Remaining > frame.AbsMaxPacketSize+frame.HeaderSize:
		return fmt.Errorf("remaining %d", ps.Remaining)
	case ps.Remaining == 0 && ps.CurIndex != 0:
		return errors.New("a chunk index with no frame in progress")
	case ps.Bytes < 0 || ps.Packets < 0 || ps.RTT < 0:
		return errors.New("negative counters")
	}
	if b := ps.Bridge; b != nil {
		switch {
		case b.From < bridge.Gen31 || b.From > bridge.Gen6 || b.To < bridge.Gen31 || b.To > bridge.Gen6 || b.From == b.To:
			return fmt.Errorf("bridge %d→%d", b.From, b.To)
		case b.Encoding > frame.RencodePlus:
			return fmt.Errorf("bridge encoding %d", b.Encoding)
		case b.Comp > bridge.LZ4OrZlib:
			return fmt.Errorf("bridge compressor %d", b.Comp)
		case len(b.Draws) > maxStateCodings:
			return fmt.Errorf("bridge: %d encodings counted", len(b.Draws))
		case ps.Remaining > 0:
			return errors.New("a bridged pipe has no cut-through frame")
		}
		for k, n := range b.Draws {
			if len(k) > 32 || n < 0 {
				return errors.New("bridge draw counts")
			}
		}
	}
	return nil
}

// ResumeSession rebuilds a handed-over session in this process, relaying
// between client and server (both already served by the caller's loop)
// from where the old process stopped; id is its number here. The caller
// then delivers what each connection holds (ClientTraffic,
// ServerTraffic). A state this process cannot continue (a cut-through
// frame larger than its own packet size bound allows) is an error, and
// the session is refused.
func ResumeSession(id uint64, cfg *Config, host Host, client, server Conn, st *SessionState, now time.Time) (*Session, error) {
	if err := st.check(); err != nil {
		return nil, fmt.Errorf("relay: session state: %w", err)
	}
	if st.C2S.Remaining > cfg.MaxPacketSize+frame.HeaderSize {
		return nil, fmt.Errorf("relay: session state: a %d-byte client frame in progress, more than --max-packet-size", st.C2S.Remaining)
	}
	s := &Session{ID: id, cfg: cfg, host: host, client: client, server: server, state: stateRelay,
		peer: st.Peer, src: st.Source, user: st.User, display: st.Display, target: st.Target, pool: st.Pool,
		transport: st.Transport, claimed: st.Claimed, enc: st.Encoding, serverGen: st.ServerGen,
		started: st.Started, active: now, helloSeen: true, authed: true, admitted: true}
	if st.Link != (Link{}) {
		link := st.Link
		s.link = &link
	}
	link := &LinkOptions{Level: st.Level}
	s.c2s = st.C2S.pipe(s, link, client, server, cfg.MaxPacketSize)
	s.c2s.toServer = true
	s.s2c = st.S2C.pipe(s, link, server, client, frame.AbsMaxPacketSize)
	if pg := st.Ping; pg != nil && cfg.PingInterval > 0 {
		s.ping = &pinger{uuid: bytes.Clone(pg.UUID), clientEcho: pg.ClientEcho, serverEcho: pg.ServerEcho,
			last: now, clientRTT: pg.ClientRTT, serverRTT: pg.ServerRTT, echoesHidden: pg.EchoesHidden}
	}
	if err := s.decodeServerQueue(st.ServerQueue); err != nil {
		return nil, err
	}
	return s, nil
}

func (ps *PipeState) pipe(s *Session, link *LinkOptions, src, dst Conn, maxSize int) *pipe {
	p := &pipe{s: s, link: link, src: src, dst: dst, max: maxSize, remaining: ps.Remaining,
		curIndex: ps.CurIndex, midPacket: ps.MidPacket, compress: ps.Compress,
		Bytes: ps.Bytes, Packets: ps.Packets, rtt: ps.RTT}
	// What the old process counted it also reported to its metrics.
	p.reported = TrafficTotals{Bytes: ps.Bytes, Packets: ps.Packets}
	p.reader.MaxPacketSize = maxSize
	if bs := ps.Bridge; bs != nil {
		b := &bridging{tr: bridge.Translator{From: bs.From, To: bs.To}, comp: bs.Comp, lz4: bs.LZ4, zlib: bs.Zlib}
		b.out = frame.Writer{Encoding: bs.Encoding, Compression: bs.Compression, Flush: bs.Flush}
		if len(bs.Draws) > 0 {
			b.draws = make(map[string]int64, len(bs.Draws))
			for k, n := range bs.Draws {
				b.draws[k] = n
			}
		}
		p.bridge = b
	}
	return p
}

// decodeServerQueue reads the proxy's own packets back into the queue.
func (s *Session) decodeServerQueue(b []byte) error {
	r := frame.Reader{MaxPacketSize: maxStateQueue, MaxValues: 1 << 10}
	for len(b) > 0 {
		pkt, n, err := r.Next(b)
		if err != nil {
			return fmt.Errorf("relay: session state: server queue: %w", err)
		}
		if n == 0 {
			return errors.New("relay: session state: server queue: a frame cut short")
		}
		if pkt != nil {
			s.serverQueue = append(s.serverQueue, pkt)
		}
		b = b[n:]
	}
	return nil
}

// HandedOver ends the session here once another process took it over:
// it writes no access record and releases no pool place or user slot
// (the new process holds them now). The caller has released both
// connections. Loop only.
func (s *Session) HandedOver() {
	s.state, s.recorded = stateHandedOff, true
	s.serverQueue = nil
}
