package relay_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/bridge"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// A relaying session handed over mid-stream (in the middle of a raw
// chunk, of a header, of a main packet, each way) goes on in a new
// Session from its State: what both peers receive is exactly what the
// other sent, with nothing lost, repeated or reordered.
func TestSessionStateHandsMidStream(t *testing.T) {
	srv := server(t)
	cfg := config(users(t, srv.URL()))
	s2c := streamOf(t, frame.Rencode, 6, 300<<10)
	c2s := streamOf(t, frame.Rencode, 4, 200<<10)
	for _, cut := range []struct{ s2c, c2s int }{
		{0, 0}, {5, 3}, {frame.HeaderSize + 10, 100}, {150 << 10, 250 << 10},
		{len(s2c) / 2, len(c2s) / 3}, {len(s2c) - 1, len(c2s) - 7}, {len(s2c), len(c2s)},
	} {
		p := relaying(t, cfg)
		clientBase, serverBase := p.c.Out.Len(), p.h.Server.Out.Len()
		p.h.Server.Feed(s2c[:cut.s2c])
		p.s.ServerTraffic(p.now)
		p.c.Feed(c2s[:cut.c2s])
		p.s.ClientTraffic(p.now)

		st, err := p.s.State()
		if err != nil {
			t.Fatalf("cut %v: %v", cut, err)
		}
		enc, err := st.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := relay.DecodeState(enc)
		if err != nil {
			t.Fatalf("cut %v: decode: %v", cut, err)
		}
		// The bytes read but not consumed travel beside the state.
		client, server := xpratest.NewConn(""), xpratest.NewConn("127.0.0.1:6000")
		client.Feed(carried(p.c))
		server.Feed(carried(p.h.Server))
		p.s.HandedOver()

		s, err := relay.ResumeSession(99, cfg, &xpratest.Host{}, client, server, got, p.now)
		if err != nil {
			t.Fatalf("cut %v: resume: %v", cut, err)
		}
		server.Feed(s2c[cut.s2c:])
		s.ServerTraffic(p.now)
		client.Feed(c2s[cut.c2s:])
		s.ClientTraffic(p.now)
		if !s.Relaying() {
			t.Fatalf("cut %v: the resumed session does not relay", cut)
		}
		toClient := append(bytes.Clone(p.c.Out.Bytes()[clientBase:]), client.Out.Bytes()...)
		toServer := append(bytes.Clone(p.h.Server.Out.Bytes()[serverBase:]), server.Out.Bytes()...)
		if sha256.Sum256(toClient) != sha256.Sum256(s2c) {
			t.Errorf("cut %v: the client got %d bytes, not the server's %d", cut, len(toClient), len(s2c))
		}
		if sha256.Sum256(toServer) != sha256.Sum256(c2s) {
			t.Errorf("cut %v: the server got %d bytes, not the client's %d", cut, len(toServer), len(c2s))
		}
		if rec, ok := s.Record(); !ok || rec.User != "foo" || rec.Bytes != int64(len(s2c)+len(c2s)) {
			t.Errorf("cut %v: record %+v", cut, rec)
		}
	}
}

// carried is what a connection read and the session did not consume.
func carried(c *xpratest.Conn) []byte {
	b, _ := c.Peek(c.InboundBuffered())
	return bytes.Clone(b)
}

// streamOf is n draw packets, each with a raw chunk of size bytes (cut
// through by the relay) and small packets between them.
func streamOf(t *testing.T, enc frame.Encoding, n, size int) []byte {
	t.Helper()
	w := frame.Writer{Encoding: enc}
	px := make([]byte, size)
	var out []byte
	for i := range n {
		for j := range px {
			px[j] = byte(i*31 + j*7)
		}
		var err error
		if out, err = w.AppendPacket(out, frame.Packet{"draw", 1, 0, 0, 64, 64, "rgb24", frame.Compressed{Data: px}, i, 256, frame.NewDict()}); err != nil {
			t.Fatal(err)
		}
		if out, err = w.AppendPacket(out, frame.Packet{"cursor", i}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// A session that does not relay yet cannot be handed over.
func TestSessionStateNotHandable(t *testing.T) {
	srv := server(t)
	p := newPeer(t, config(users(t, srv.URL())))
	if _, err := p.s.State(); !errors.Is(err, relay.ErrNotHandable) {
		t.Errorf("a session in its login was handable: %v", err)
	}
}

func fullState() *relay.SessionState {
	return &relay.SessionState{Version: relay.StateVersion, ID: 7, User: "foo", Peer: "tcp 127.0.0.1:4000",
		Source: "127.0.0.1", Display: "tcp://host:10000/", Target: "tcp://host:10000/", Pool: "p",
		Transport: "ws", Claimed: "6.3", Encoding: frame.RencodePlus, ServerGen: bridge.Gen31,
		Link: relay.Link{Transport: "ws", RequireMask: true}, Level: 0,
		Started: time.Unix(1000, 5).UTC(), Active: time.Unix(2000, 0).UTC(),
		C2S: relay.PipeState{Bytes: 10, Packets: 2, RTT: time.Millisecond,
			Bridge: &relay.BridgeState{From: bridge.Gen6, To: bridge.Gen31, Encoding: frame.Rencode, Compression: frame.AlgoLZ4 | 1, LZ4: true, Zlib: true}},
		S2C: relay.PipeState{MidPacket: true, Compress: frame.AlgoLZ4 | 3, Bytes: 1 << 40, Packets: 5,
			Bridge: &relay.BridgeState{From: bridge.Gen31, To: bridge.Gen6, Encoding: frame.RencodePlus, Flush: true, Comp: bridge.Zlib, Draws: map[string]int64{"png": 3}}},
		Ping: &relay.PingState{UUID: []byte("xpraproxy-0123"), ClientEcho: true, ClientRTT: time.Second, EchoesHidden: 4},
	}
}

func TestSessionStateRoundTrip(t *testing.T) {
	st := fullState()
	b, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := relay.DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, st)
	}
	if strings.Contains(string(b), "password") {
		t.Error("the state names a password")
	}
}

// Every field another process could get wrong is refused.
func TestSessionStateRefusals(t *testing.T) {
	for name, spoil := range map[string]func(*relay.SessionState){
		"version":    func(s *relay.SessionState) { s.Version = 2 },
		"tls":        func(s *relay.SessionState) { s.Link.TLS = true },
		"link":       func(s *relay.SessionState) { s.Link.Transport = "quic" },
		"encoding":   func(s *relay.SessionState) { s.Encoding = 9 },
		"generation": func(s *relay.SessionState) { s.ServerGen = 7 },
		"level":      func(s *relay.SessionState) { s.Level = 16 },
		"long user":  func(s *relay.SessionState) { s.User = strings.Repeat("u", 2000) },
		"remaining": func(s *relay.SessionState) {
			s.C2S.Bridge, s.S2C.Bridge = nil, nil
			s.S2C.Remaining = frame.AbsMaxPacketSize + 100
		},
		"negative":     func(s *relay.SessionState) { s.C2S.Remaining = -1 },
		"index":        func(s *relay.SessionState) { s.C2S.CurIndex = 3 },
		"counters":     func(s *relay.SessionState) { s.S2C.Bytes = -5 },
		"half bridged": func(s *relay.SessionState) { s.C2S.Bridge = nil },
		"same gen":     func(s *relay.SessionState) { s.C2S.Bridge.To = bridge.Gen6 },
		"bridge cut":   func(s *relay.SessionState) { s.S2C.Remaining = 10; s.S2C.CurIndex = 1 },
		"codings": func(s *relay.SessionState) {
			for i := range 20 {
				s.S2C.Bridge.Draws[strings.Repeat("x", i+1)] = 1
			}
		},
		"uuid":  func(s *relay.SessionState) { s.Ping.UUID = make([]byte, 100) },
		"queue": func(s *relay.SessionState) { s.ServerQueue = make([]byte, 20<<10) },
	} {
		st := fullState()
		spoil(st)
		b, err := st.Encode()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := relay.DecodeState(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	b, _ := fullState().Encode()
	for name, bad := range map[string][]byte{
		"trailing": append(bytes.Clone(b), []byte(`{}`)...),
		"unknown":  append([]byte(`{"zz":1,`), b[1:]...),
		"huge":     bytes.Repeat([]byte(" "), relay.MaxStateSize+1),
		"empty":    nil,
	} {
		if _, err := relay.DecodeState(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A cut-through client frame larger than this process allows.
	st := fullState()
	st.C2S.Bridge, st.S2C.Bridge = nil, nil
	st.C2S.Remaining, st.C2S.CurIndex = 200<<20, 1
	if _, err := relay.ResumeSession(1, config(nil), &xpratest.Host{}, xpratest.NewConn(""), xpratest.NewConn(""), st, time.Now()); err == nil {
		t.Error("resumed a client frame over --max-packet-size")
	}
}

// FuzzDecodeState: the state comes from another process; whatever it
// holds, decoding does not panic, and what decodes rebuilds a session
// that relays bytes without panicking.
func FuzzDecodeState(f *testing.F) {
	b, _ := fullState().Encode()
	f.Add(b)
	st := fullState()
	st.C2S.Bridge, st.S2C.Bridge = nil, nil
	st.S2C.Remaining, st.S2C.CurIndex = 40, 1
	b, _ = st.Encode()
	f.Add(b)
	f.Add([]byte(`{"v":1}`))
	cfg := config(nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := relay.DecodeState(b)
		if err != nil {
			return
		}
		again, err := st.Encode()
		if err != nil {
			t.Fatalf("a decoded state does not encode: %v", err)
		}
		if _, err := relay.DecodeState(again); err != nil {
			t.Fatalf("a re-encoded state does not decode: %v", err)
		}
		client, server := xpratest.NewConn(""), xpratest.NewConn("")
		s, err := relay.ResumeSession(1, cfg, &xpratest.Host{}, client, server, st, time.Now())
		if err != nil {
			return
		}
		server.Feed(b)
		client.Feed(b)
		s.ServerTraffic(time.Now())
		s.ClientTraffic(time.Now())
	})
}
