package relay

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/route"
)

func TestServerHelloFilters(t *testing.T) {
	client := frame.NewDict(
		"version", "3.1.3", "username", "alice", "uuid", "u1", "display", ":10",
		"challenge", true, "challenge_response", "abc", "challenge_client_salt", []byte("s"),
		"cipher", "AES", "cipher.iv", "x", "digest", []any{"xor"}, "salt-digest", []any{"xor"},
		"aliases", frame.NewDict("draw", 35), "compression_level", 3, "lz4", true)
	target, _ := route.ParseTarget("tcp://bob:pw@127.0.0.1:10100/")
	h, link, warnings := ServerHello(client, target, []authn.Option{{Key: "compression", Value: "0"}, {Key: "bogus", Value: "1"}, {Key: "password", Value: "opt"}})
	for _, gone := range []string{"challenge", "challenge_response", "challenge_client_salt", "cipher", "cipher.iv", "aliases"} {
		if h.Has(gone) {
			t.Errorf("%s forwarded to the server", gone)
		}
	}
	for k, want := range map[string]string{"username": "bob", "uuid": "u1", "display": ":10", "version": "3.1.3"} {
		if v, _ := h.Text(k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	if d, _ := h.Get("digest"); len(d.([]string)) == 0 || d.([]string)[0] != "hmac+sha512" {
		t.Errorf("digest = %v", d)
	}
	if v, _ := h.Int("compression_level"); v != 0 || !link.Uncompressed() {
		t.Errorf("compression=0 not applied: level %d", v)
	}
	if b, _ := h.Bool("proxy"); !b {
		t.Error("no proxy marker")
	}
	if link.Password != "opt" {
		t.Errorf("password option: %q", link.Password)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "bogus") {
		t.Errorf("warnings: %v", warnings)
	}
	// The client's own hello is untouched.
	if !client.Has("aliases") || !client.Has("challenge_response") {
		t.Error("ServerHello modified the client's hello")
	}
}

func TestSessionOptionValues(t *testing.T) {
	h := frame.Dict{}
	link, warnings := ApplySessionOptions(&h, []authn.Option{{Key: "compression_level", Value: "x"}, {Key: "lz4", Value: "maybe"}, {Key: "zlib", Value: "false"}})
	if link.Level != -1 || link.Uncompressed() || len(warnings) != 2 {
		t.Errorf("level %d, warnings %v", link.Level, warnings)
	}
	if v, ok := h.Bool("zlib"); !ok || v {
		t.Errorf("zlib=false not applied")
	}
}

// The AES options of a row: a mode, a key file; anything else warned.
func TestSessionOptionEncryption(t *testing.T) {
	h := frame.Dict{}
	link, warnings := ApplySessionOptions(&h, []authn.Option{{Key: "encryption", Value: "aes-ctr"}, {Key: "encryption-keyfile", Value: "/k"}})
	if link.Encryption != "AES-CTR" || link.EncryptionKeyFile != "/k" || len(warnings) != 0 || len(h) != 0 {
		t.Errorf("link %+v, warnings %v, hello %v", link, warnings, h)
	}
	link, warnings = ApplySessionOptions(&h, []authn.Option{{Key: "encryption", Value: "des"}})
	if link.Encryption != "" || len(warnings) != 1 {
		t.Errorf("encryption=des: %+v %v", link, warnings)
	}
}

func TestClientHelloFilters(t *testing.T) {
	server := frame.NewDict("version", "3.1.3", "aliases", frame.NewDict("hello", 1), "encoding", "rgb")
	h := ClientHello(server)
	if h.Has("aliases") || !h.Has("encoding") || !h.Has("proxy.version") {
		t.Errorf("client hello: %v", h)
	}
}

// Each peer gets the proxy marker in its own dialect, with its own
// generation as the version and xpraproxy's version beside it.
func TestProxyCapsDialect(t *testing.T) {
	target, _ := route.ParseTarget("tcp://127.0.0.1:10100/")
	six := frame.NewDict("version", "6.5", "encoders", []any{"rencodeplus"}, "proxy", true, "proxy.version", "3.1.3")
	h, _, _ := ServerHello(six, target, nil)
	p, ok := h.Dict("proxy")
	if !ok || h.Has("proxy.version") {
		t.Fatalf("a 6.x server should get proxy as a dict: %v", h)
	}
	if v, _ := p.Text("version"); v != "6.5" {
		t.Errorf("proxy version to a 6.5 peer: %q", v)
	}
	if pl, _ := p.Text("platform"); !strings.Contains(pl, "xpraproxy "+Version) {
		t.Errorf("platform %q does not name xpraproxy and its version", pl)
	}
	three := frame.NewDict("version", "3.1.3", "encoders", []any{"rencode", "bencode"})
	h, _, _ = ServerHello(three, target, nil)
	if v, _ := h.Text("proxy.version"); v != "3.1.3" {
		t.Errorf("flat proxy.version to a 3.1 peer: %q", v)
	}
	if b, _ := h.Bool("proxy"); !b {
		t.Error("3.1 peer: proxy is not True")
	}
	c := ClientHello(frame.NewDict("version", "6.5", "proxy", frame.NewDict("version", "1.0")))
	if p, ok := c.Dict("proxy"); !ok || func() string { v, _ := p.Text("version"); return v }() != "6.5" {
		t.Errorf("6.x client hello: %v", c)
	}
}

func TestEncodersAndMismatch(t *testing.T) {
	three := PeerEncoders(frame.NewDict("version", "3.1.3", "encoders", []any{"rencode", "bencode", "yaml"}))
	six := PeerEncoders(frame.NewDict("version", "6.5", "encoders", []any{"rencodeplus", "yaml", "none"}))
	old := PeerEncoders(frame.NewDict("version", "3.1.3", "rencode", true))
	sixBools := PeerEncoders(frame.NewDict("rencodeplus", frame.NewDict("", true)))
	if three != EncRencode|EncBencode || six != EncRencodePlus || old != EncRencode|EncBencode || sixBools != EncRencodePlus {
		t.Fatalf("encoders: %v / %v / %v / %v", three, six, old, sixBools)
	}
	if three.Compatible(six) || !three.Compatible(0) || !(EncRencodePlus | EncRencode).Compatible(three) {
		t.Error("compatibility")
	}
	if m := Mismatch(three, six); !strings.Contains(m, "needs an xpra >= 4.3 client: rencodeplus; yours offers rencode, bencode") {
		t.Errorf("3.1 client, 6.x server: %s", m)
	}
	if m := Mismatch(six, three); !strings.Contains(m, "rencode or bencode") || !strings.Contains(m, "only rencodeplus") {
		t.Errorf("6.x client, 3.1 server: %s", m)
	}
	if e := RefusalEncoders("disconnect invalid compression: zlib is not available", three); e != EncRencodePlus {
		t.Errorf("6.x refusal read as %v", e)
	}
	if e := RefusalEncoders("disconnect: invalid packet format, failed to parse bencode packet", six); e&EncRencodePlus != 0 || e == 0 {
		t.Errorf("3.1 refusal read as %v", e)
	}
	if e := RefusalEncoders("disconnect: server is shutting down", three); e != 0 {
		t.Errorf("an unrelated refusal read as %v", e)
	}
	for caps, want := range map[string]string{"6.5": "6.5", "6.5.5": "6.5", "3.1.3": "3.1.3", "": "3.1.3", "5.0.1": "5.0"} {
		if got := ClaimedVersion(frame.NewDict("version", caps)); got != want {
			t.Errorf("ClaimedVersion(%q) = %q, want %q", caps, got, want)
		}
	}
}

// Limits travel to workers as JSON: every field survives the trip, and
// info shows each by its JSON name.
func TestLimitsRoundTrip(t *testing.T) {
	l := Limits{LoginTimeout: 17 * time.Second, ChallengeTimeout: time.Minute, ConnectTimeout: 13 * time.Second,
		IdleTimeout: time.Hour, MaxPacketSize: 1, MaxSessionBuffer: 2, PingInterval: 3, LoginPacketSize: 4,
		ConnectBuffer: 5, MaxTargetConnects: 6, StartSessions: true, MaxStartedSessions: 7, StartAsProxyUser: true,
		StartCommands: []string{"xterm", "xclock"}, StartEnv: []string{"LANG"}, StartXpra: []string{"/usr/bin/xpra"}}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var back Limits
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, l) {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	info := l.Info()
	if len(info) != reflect.TypeOf(l).NumField() {
		t.Errorf("info has %d of %d fields: %v", len(info), reflect.TypeOf(l).NumField(), info)
	}
	if v, _ := info.Text("start_commands"); v != "xterm,xclock" {
		t.Errorf("start_commands = %q", v)
	}
	if v, _ := info.Int("login_timeout"); v != int64(17*time.Second) {
		t.Errorf("login_timeout = %d", v)
	}
}
