package frame

import (
	"bytes"
	"io"
	"testing"
)

// testdata/capture holds both directions of a real xpra 3.1.3 session
// (capture.sh: `xpra start` server with password auth, `xpra attach`
// client under Xvfb, recorded by testdata/record).

type captured struct {
	packet Packet
	header Header
}

func readCapture(t *testing.T, name string) []captured {
	t.Helper()
	data := readGoldenDir(t, "capture", name)
	sr := NewStreamReader(bytes.NewReader(data), AbsMaxPacketSize)
	var out []captured
	for {
		p, err := sr.ReadPacket()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: packet %d: %v", name, len(out), err)
		}
		out = append(out, captured{p, sr.Header()})
	}
}

func readGoldenDir(t testing.TB, dir, name string) []byte {
	t.Helper()
	return readGolden(t, "../"+dir+"/"+name)
}

// typeName resolves a packet type through the receiver's alias table.
func typeName(p Packet, aliases map[int64]string) string {
	if a, ok := p.Alias(); ok {
		return aliases[a]
	}
	return p.Type()
}

func aliasTable(hello Dict) map[int64]string {
	m := map[int64]string{}
	a, _ := hello.Dict("aliases")
	for _, kv := range a {
		name, _ := AsText(kv.Key)
		if n, ok := AsInt(kv.Value); ok {
			m[n] = name
		}
	}
	return m
}

func TestCaptureParses(t *testing.T) {
	c2s := readCapture(t, "c2s.bin")
	s2c := readCapture(t, "s2c.bin")
	if len(c2s) < 2 || len(s2c) < 3 {
		t.Fatalf("capture too short: %d/%d packets", len(c2s), len(s2c))
	}
	// Handshake: the client's hello (without a response: it has not seen
	// a challenge yet), the server's challenge, the hello again with the
	// response, the server's hello.
	first, _ := c2s[0].packet[1].(Dict)
	if c2s[0].packet.Type() != "hello" || first.Has("challenge_response") || !first.Has("version") {
		t.Fatalf("first client packet is %s, want a hello without challenge_response", c2s[0].packet)
	}
	if c2s[0].header.Compression.Algo() != AlgoZlib || !c2s[0].header.Compression.Compressed() {
		t.Errorf("3.1 client's first hello should be zlib-compressed, header %v", c2s[0].header)
	}
	ch := s2c[0].packet
	if ch.Type() != "challenge" || len(ch) < 6 {
		t.Fatalf("first server packet %s, want challenge", ch)
	}
	if salt, _ := ch[1].([]byte); len(salt) < 32 {
		t.Errorf("challenge salt of %d bytes", len(salt))
	}
	if d, _ := AsText(ch[3]); d != "hmac+sha512" {
		t.Errorf("challenge digest %q", d)
	}
	full, _ := c2s[1].packet[1].(Dict)
	if c2s[1].packet.Type() != "hello" || !full.Has("challenge_response") || !full.Has("aliases") {
		t.Fatalf("second client packet: %s", c2s[1].packet)
	}
	clientAliases := aliasTable(full)
	// The server's hello arrives already aliased (the client's alias for
	// "hello", spec §1.6).
	if typeName(s2c[1].packet, clientAliases) != "hello" {
		t.Fatalf("server's second packet is %v, want hello", s2c[1].packet[0])
	}
	serverHello, _ := s2c[1].packet[1].(Dict)
	serverAliases := aliasTable(serverHello)

	counts := map[string]int{}
	var chunked int
	for _, c := range s2c {
		name := typeName(c.packet, clientAliases)
		if name == "" {
			t.Errorf("server packet %v has no known type", c.packet[0])
		}
		counts["s2c:"+name]++
		if name == "draw" {
			if px, ok := c.packet[7].([]byte); !ok || len(px) == 0 {
				t.Errorf("draw pixels are %T (%d bytes)", c.packet[7], len(px))
			}
		}
	}
	for _, c := range c2s {
		name := typeName(c.packet, serverAliases)
		if name == "" {
			t.Errorf("client packet %v has no known type", c.packet[0])
		}
		counts["c2s:"+name]++
	}
	// Chunks: count raw frames in the server stream directly.
	data := readGoldenDir(t, "capture", "s2c.bin")
	for len(data) > 0 {
		n, h, err := FrameLen(data, AbsMaxPacketSize)
		if err != nil {
			t.Fatal(err)
		}
		if h.Index > 0 {
			chunked++
		}
		data = data[n:]
	}
	t.Logf("packet types: %v; raw chunks in s2c: %d", counts, chunked)
	// xpra 3.1 never inlines pixel data: every draw brings a raw chunk.
	if counts["s2c:draw"] == 0 || chunked < counts["s2c:draw"] {
		t.Errorf("capture has %d draw packets and %d chunks; want a chunk per draw", counts["s2c:draw"], chunked)
	}
	if counts["c2s:damage-sequence"] == 0 {
		t.Errorf("client never acknowledged a draw")
	}

	// Every packet of the capture survives decode and re-encode with the
	// same encoder, and peeking gives the same type as decoding.
	for dir, list := range map[string][]captured{"c2s": c2s, "s2c": s2c} {
		for i, c := range list {
			w := Writer{Encoding: c.header.Flags.Encoding()}
			frames, err := w.AppendPacket(nil, c.packet)
			if err != nil {
				t.Fatalf("%s %d: re-encode %s: %v", dir, i, c.packet, err)
			}
			var r Reader
			back, _, err := nextPacket(&r, frames)
			if err != nil || !Equal([]any(back), []any(c.packet)) {
				t.Fatalf("%s %d: %s does not survive re-encoding: %v", dir, i, c.packet, err)
			}
		}
	}
}

func TestCapturePeekMatchesDecode(t *testing.T) {
	for _, name := range []string{"c2s.bin", "s2c.bin"} {
		data := readGoldenDir(t, "capture", name)
		var r Reader
		for len(data) > 0 {
			n, h, err := FrameLen(data, AbsMaxPacketSize)
			if err != nil {
				t.Fatal(err)
			}
			var typ Type
			if h.Index == 0 {
				if typ, err = PeekType(h, data[HeaderSize:n]); err != nil {
					t.Fatalf("%s: peek: %v", name, err)
				}
			}
			p, _, err := r.Next(data[:n])
			if err != nil {
				t.Fatal(err)
			}
			if p != nil {
				if a, ok := p.Alias(); ok {
					if got, _ := typ.Alias(); got != a {
						t.Errorf("%s: peeked %v, decoded alias %d", name, typ, a)
					}
				} else if !typ.Is(p.Type()) {
					t.Errorf("%s: peeked %v, decoded %q", name, typ, p.Type())
				}
			}
			data = data[n:]
		}
	}
}
