package relay

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/bridge"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
)

// The access log (docs/accesslog.md): one AccessRecord per session, made
// when it ends, with a fixed set of small fields. Every string in it is
// bounded (logsafe) because the user and the address come from the
// client, and none holds a secret: the target is the redacted display,
// the reason is what the client itself was told.

// AccessRecord is one session's line in the access log. It is a value of
// bounded size: strings are cut by logsafe before they are stored. It
// travels as JSON from a privilege-separated worker to the main process,
// which writes it (privsep).
type AccessRecord struct {
	ID        uint64        `json:"id"`
	Client    string        `json:"client"`    // the client's address ("127.0.0.1:40000", "unix")
	User      string        `json:"user"`      // logsafe
	Transport string        `json:"transport"` // tcp, unix, ssl, ws, wss, or a stream's kind (ssh, quic)
	ClientGen string        `json:"client_gen,omitempty"`
	ServerGen string        `json:"server_gen,omitempty"`
	Bridged   bool          `json:"bridged,omitempty"`
	Target    string        `json:"target,omitempty"` // redacted, logsafe
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration"`
	C2S       TrafficTotals `json:"c2s"`
	S2C       TrafficTotals `json:"s2c"`
	Reason    CloseReason   `json:"reason"`
	Phase     Phase         `json:"phase"`
	Text      string        `json:"text,omitempty"` // what the client was told, logsafe
}

// maxAccessField bounds each string of a record that came from another
// process (a worker, which runs as a user): what logsafe makes of a
// string is at most about this long.
const maxAccessField = 4*logsafe.MaxLen + 32

// Bounded is r with every string cut to maxAccessField: the main process
// writes a worker's record only after this.
func (r AccessRecord) Bounded() AccessRecord {
	for _, p := range []*string{&r.Client, &r.User, &r.Transport, &r.ClientGen, &r.ServerGen, &r.Target, &r.Text} {
		if len(*p) > maxAccessField {
			*p = logsafe.String((*p)[:maxAccessField])
		}
	}
	return r
}

// Code is the two-letter termination code: who ended the session, in
// which phase ("CR": the client left while relaying).
func (r *AccessRecord) Code() string { return string([]byte{r.Reason.Who(), byte(r.Phase)}) }

// AccessMsg is the message of an access record's log line.
const AccessMsg = "session ended"

// Attrs are the record's fields as slog attributes, in a stable order
// with stable names: the text and JSON log lines and the journal's
// fields (upper-cased, XPRAPROXY_ prefixed) are made of them.
func (r *AccessRecord) Attrs() []slog.Attr {
	return []slog.Attr{
		slog.Uint64("session", r.ID),
		slog.String("client", r.Client),
		slog.String("user", r.User),
		slog.String("transport", r.Transport),
		slog.String("client_gen", r.ClientGen),
		slog.String("server_gen", r.ServerGen),
		slog.Bool("bridged", r.Bridged),
		slog.String("target", r.Target),
		slog.String("start", r.Start.UTC().Format(time.RFC3339Nano)),
		slog.Float64("duration", r.Duration.Seconds()),
		slog.Int64("c2s_bytes", r.C2S.Bytes),
		slog.Int64("c2s_packets", r.C2S.Packets),
		slog.Int64("s2c_bytes", r.S2C.Bytes),
		slog.Int64("s2c_packets", r.S2C.Packets),
		slog.String("code", r.Code()),
		slog.String("reason", r.Reason.String()),
		slog.String("text", r.Text),
	}
}

// Log writes the record as one line of log.
func (r *AccessRecord) Log(log *slog.Logger) {
	log.LogAttrs(context.Background(), slog.LevelInfo, AccessMsg, r.Attrs()...)
}

// Transporter is a client connection that names its transport for the
// access log ("ws", "ssl", "wss", a stream's kind); a plain socket is
// named by its address ("tcp", "unix").
type Transporter interface{ Transport() string }

// transportOf names c's transport.
func transportOf(c Conn) string {
	if t, ok := c.(Transporter); ok {
		return t.Transport()
	}
	switch c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return "tcp"
	case *net.UnixAddr:
		return "unix"
	case nil:
		return "unknown"
	}
	return logsafe.String(c.RemoteAddr().Network())
}

// TransportOfLink is the transport an adopted client had in the process
// that accepted it, from its Link, when the handoff did not name it.
func TransportOfLink(l Link, plain string) string {
	switch {
	case l.Transport == "ws" && l.TLS:
		return "wss"
	case l.Transport == "ws":
		return "ws"
	case l.TLS:
		return "ssl"
	}
	return plain
}

// ending records why the session ends, once: the first decision wins
// (a client that leaves while it is being told the reason it was
// stopped was stopped), as nats-server's closing is idempotent.
func (s *Session) ending(r CloseReason, reason string, extra ...string) {
	if s.closeWhy != CloseNone {
		return
	}
	s.closeWhy, s.closePhase = r, s.phase()
	text := reason
	if len(extra) > 0 && extra[0] != "" {
		text += ": " + strings.Join(extra, ", ")
	}
	s.closeText = logsafe.String(text)
}

// accessRecord is the record of the session as it is now.
func (s *Session) accessRecord(now time.Time) AccessRecord {
	client := s.peer
	if _, a, ok := strings.Cut(s.peer, " "); ok {
		client = a // "tcp 127.0.0.1:40000": the address
	}
	r := AccessRecord{ID: s.ID, Client: logsafe.String(client), User: logsafe.String(s.user),
		Transport: s.transport, Target: logsafe.String(s.target), Start: s.started,
		Duration: now.Sub(s.started), Reason: s.closeWhy, Phase: s.closePhase, Text: s.closeText}
	if r.Target == "" && s.display != "" {
		r.Target = logsafe.String(s.display)
	}
	if s.helloSeen {
		// The generation its encoder says, as info shows it.
		r.ClientGen = bridge.Gen31.String()
		if s.enc == frame.RencodePlus {
			r.ClientGen = bridge.Gen6.String()
		}
	}
	r.ServerGen = genName(s.serverGen)
	if s.c2s != nil && s.s2c != nil {
		r.C2S = TrafficTotals{s.c2s.Bytes, s.c2s.Packets}
		r.S2C = TrafficTotals{s.s2c.Bytes, s.s2c.Packets}
		r.Bridged = s.s2c.bridge != nil
	}
	if r.Reason == CloseNone {
		r.Reason, r.Phase, r.Text = CloseClientGone, s.phase(), "client connection lost"
	}
	return r
}

// finish writes the session's access record, once, when it is over
// (closed here, not handed to another process). Loop only.
func (s *Session) finish(now time.Time) {
	if s.recorded || s.state == stateHandedOff {
		return
	}
	s.recorded = true
	s.emit(s.accessRecord(now))
}

// emit hands a record to the process's access log; from any goroutine.
func (s *Session) emit(r AccessRecord) {
	if s.cfg.Access != nil {
		s.cfg.Access(r)
		return
	}
	if s.cfg.Log != nil {
		r.Log(s.cfg.Log)
	}
}

// genName is a generation as the access log shows it: "" for unknown.
func genName(g bridge.Gen) string {
	if g == 0 {
		return ""
	}
	return g.String()
}

// AccessRecord is the record of a handed-off session that ended before
// a session of this process took it over (a worker that could not adopt
// it, or died with it): what the handoff says, and why.
func (h *Handoff) AccessRecord(now time.Time, why CloseReason, text string) AccessRecord {
	client := h.Peer
	if _, a, ok := strings.Cut(h.Peer, " "); ok {
		client = a
	}
	transport := h.Transport
	if transport == "" {
		transport = TransportOfLink(h.Link, "")
	}
	return AccessRecord{ID: h.ID, Client: logsafe.String(client), User: logsafe.String(h.User),
		Transport: logsafe.String(transport), Start: h.Started, Duration: now.Sub(h.Started),
		Reason: why, Phase: PhaseTarget, Text: logsafe.String(text)}
}
