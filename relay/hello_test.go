package relay

import (
	"strings"
	"testing"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
)

func TestServerHelloFilters(t *testing.T) {
	client := frame.NewDict(
		"version", "3.1.3", "username", "alice", "uuid", "u1", "display", ":10",
		"challenge", true, "challenge_response", "abc", "challenge_client_salt", []byte("s"),
		"cipher", "AES", "cipher.iv", "x", "digest", []any{"xor"}, "salt-digest", []any{"xor"},
		"aliases", frame.NewDict("draw", 35), "compression_level", 3, "lz4", true)
	target, _ := authn.ParseTarget("tcp://bob:pw@127.0.0.1:10100/")
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

func TestClientHelloFilters(t *testing.T) {
	server := frame.NewDict("version", "3.1.3", "aliases", frame.NewDict("hello", 1), "encoding", "rgb")
	h := ClientHello(server)
	if h.Has("aliases") || !h.Has("encoding") || !h.Has("proxy.version") {
		t.Errorf("client hello: %v", h)
	}
}
