package loop

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// startBridge runs a proxy whose one user's server speaks only enc.
func startBridge(t *testing.T, only frame.Encoding) (string, *xpratest.Server) {
	t.Helper()
	fs := xpratest.NewServer(t, xpratest.ServerOptions{Only: only})
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Limits:      relay.Limits{LoginTimeout: 5 * time.Second, ChallengeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, MaxPacketSize: 4 << 20},
		Generations: &relay.Generations{}}
	addr, _ := startProxy(t, cfg, Options{})
	return addr, fs
}

// The clients of TestBridgedRelay.
const (
	client31 = iota
	client6
	clientBencode // the 3.1 HTML5 client: bencode only
)

// bridgedClient logs a client of the other generation in.
func bridgedClient(t *testing.T, addr string, kind int) *testClient {
	t.Helper()
	dial, hello := xpratest.Dial, xpratest.Hello("foo")
	if kind == client6 {
		dial, hello = xpratest.Dial6, xpratest.Hello6("foo")
	}
	c, err := dial(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	if kind == clientBencode {
		c.Writer.Encoding = frame.Bencode
		hello.Set("rencode", false)
		hello.Set("bencode", true)
		hello.Set("encoders", []any{"bencode"})
	}
	t.Cleanup(func() { c.Close() })
	tc := &testClient{c}
	p, err := tc.Login("foo", "bar", hello)
	if err != nil || p.Type() != "hello" {
		t.Fatalf("bridged login: %v %v", p, err)
	}
	return tc
}

// Both ways: the hello reaches the server in its own encoder with its
// generation's shape; draws come back as raw chunks with their pixels
// intact; pings and info answers cross.
func TestBridgedRelay(t *testing.T) {
	for _, c := range []struct {
		name   string
		only   frame.Encoding
		client int
	}{{"3.1 client, 6.x server", frame.RencodePlus, client31}, {"6.x client, 3.1 server", frame.Rencode, client6},
		{"3.1 bencode client, 6.x server", frame.RencodePlus, clientBencode}} {
		t.Run(c.name, func(t *testing.T) {
			addr, fs := startBridge(t, c.only)
			tc := bridgedClient(t, addr, c.client)
			hellos := fs.Hellos()
			got := hellos[len(hellos)-1]
			if c.only == frame.RencodePlus {
				if _, isText := got[0].Key.(string); !isText || got.Has("aliases") {
					t.Errorf("the 6.x server's hello must have text keys and no aliases: %v", got)
				}
				if v, _ := got.Bool("rencodeplus"); !v {
					t.Errorf("the 6.x server must be offered rencodeplus: %v", got)
				}
			} else if !got.Has("rencode") || got.Has("rencodeplus") {
				t.Errorf("the 3.1 server's hello: %v", got)
			}
			tc.send(frame.Packet{"ping", 42, 0, "src"})
			if p := tc.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("ping: %s", p)
			}
			tc.send(frame.Packet{"stream", 4, 300_000})
			for i := range 4 {
				p := tc.recv(t)
				px, _ := p[7].([]byte)
				if p.Type() != "draw" || len(px) != 300_000 || px[0] != byte(i) || px[len(px)-1] != byte(i) {
					t.Fatalf("draw %d: %s", i, p)
				}
			}
			tc.send(frame.Packet{"info-request", []any{}, []any{}, []any{}})
			p := tc.recv(t)
			if p.Type() != "info-response" {
				t.Fatalf("info: %s %q", p, packetText(p))
			}
			if c.client == clientBencode {
				// Bencode has no None or floats: a None in a dict drops
				// the key, in a list is 0; floats are integers.
				info, _ := p[1].(frame.Dict)
				load, _ := info.Get("load")
				if info.Has("none") || fmt.Sprint(load) != "[0 0 1]" {
					t.Errorf("info for a bencode client: %v", info)
				}
			}
		})
	}
}

// The adversarial cases after login, against bridged sessions: each ends
// its own session with a reason, a bridged session alongside goes on,
// and decoding stays bounded.
func TestBridgedBadInput(t *testing.T) {
	addr, _ := startBridge(t, frame.RencodePlus)
	alongside := bridgedClient(t, addr, client31)
	frameOf := func(flags frame.ProtoFlags, comp frame.Compression, index uint8, payload []byte) []byte {
		return append(frame.Header{Flags: flags, Compression: comp, Index: index, Size: uint32(len(payload))}.Append(nil), payload...)
	}
	rencode := func(v any) []byte {
		b, err := frame.Rencode.Append(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// A draw whose 64 MB of pixels compress to a few KB: decompression
	// stops at the packet size limit.
	var bomb bytes.Buffer
	zw := zlib.NewWriter(&bomb)
	zw.Write(rencode([]any{[]byte("draw"), make([]byte, 64<<20)}))
	zw.Close()
	// ["draw", [[[[... 200 levels: the decoders' depth limit.
	deep := append([]byte{59}, rencode([]byte("draw"))...)
	for range 200 {
		deep = append(deep, 59) // rencode's open list (CHR_LIST)
	}
	many := make([]any, 300_000)
	for i := range many {
		many[i] = int64(1)
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"garbage", bytes.Repeat([]byte{0xff}, 4096)},
		{"not rencode", frameOf(frame.FlagRencode, 0, 0, []byte("\x00\x01\x02not rencode"))},
		{"zlib bomb", frameOf(frame.FlagRencode, frame.AlgoZlib.WithLevel(6), 0, bomb.Bytes())},
		{"deep nesting", frameOf(frame.FlagRencode, 0, 0, deep)},
		{"too many values", frameOf(frame.FlagRencode, 0, 0, rencode(append([]any{[]byte("draw")}, many...)))},
		{"alias number", frameOf(frame.FlagRencode, 0, 0, rencode([]any{int64(7), int64(1)}))},
		{"type not text", frameOf(frame.FlagRencode, 0, 0, rencode([]any{[]byte{0xff, 0x00}, int64(1)}))},
		{"not a list", frameOf(frame.FlagRencode, 0, 0, rencode(int64(5)))},
		{"oversized frame", binary.BigEndian.AppendUint32([]byte{'P', byte(frame.FlagRencode), 0, 0}, 1<<30)},
		// What a bencode client (the 3.1 HTML5 client) could send wrong.
		{"not bencode", frameOf(frame.FlagBencode, 0, 0, []byte("l4:drawi1.5ee"))},
		{"deep bencode", frameOf(frame.FlagBencode, 0, 0, append([]byte("l4:draw"), bytes.Repeat([]byte("l"), 200)...))},
		{"bencode string past its end", frameOf(frame.FlagBencode, 0, 0, []byte("l4:draw99999999:xe"))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kind := client31
			if strings.Contains(c.name, "bencode") {
				kind = clientBencode
			}
			tc := bridgedClient(t, addr, kind)
			tc.Conn.Write(c.data)
			deadline := time.Now().Add(10 * time.Second)
			for {
				p, err := tc.Recv(time.Until(deadline))
				if err != nil {
					if time.Now().After(deadline) {
						t.Fatalf("the session did not end: %v", err)
					}
					return // closed: ended
				}
				if p.Type() == "disconnect" {
					t.Logf("ended with: %s", packetText(p))
					if !strings.Contains(packetText(p), "error") {
						t.Errorf("disconnect without a reason: %s", packetText(p))
					}
					return
				}
			}
		})
	}
	alongside.send(frame.Packet{"ping", 7, 0, "x"})
	if p := alongside.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("the bridged session alongside: %s", p)
	}
}
