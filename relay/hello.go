// Package relay pairs an xpra client with its server: the client side of
// the handshake (hello, challenge, requests), the connection to the
// backend, and the pass-through of packets in both directions, seeing or
// rewriting only the few the proxy must (disconnect, hello, info-response).
package relay

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/route"
)

// Version is xpraproxy's own version, reported under proxy.*.
const Version = "0.1.0"

// XpraVersion is the xpra protocol version the proxy speaks in its own
// hellos (info and version replies); clients parse it as numbers.
const XpraVersion = "3.1.3"

// clientCapPrefixes are dropped from the client's hello before it goes to
// the server, as xpra's proxy does (CLIENT_REMOVE_CAPS): the proxy answers
// the server's challenge itself, and aliases would give integer packet
// types the relay could not classify.
var clientCapPrefixes = []string{"challenge", "cipher", "encryption", "digest", "salt-digest", "aliases", "wants_aliases"}

func hasPrefix(k string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// ServerHello builds the hello the proxy sends to the backend from the
// client's: removed keys, the proxy's digests and markers, the target's
// username and the session options (see ApplySessionOptions).
func ServerHello(client frame.Dict, target route.Target, opts []authn.Option) (frame.Dict, *LinkOptions, []string) {
	h := append(frame.Dict(nil), client...)
	h.DeleteFunc(func(k string) bool { return hasPrefix(k, clientCapPrefixes) })
	digests := authn.Supported()
	h.Set("digest", digests)
	h.Set("salt-digest", digests)
	h.Set("wants_aliases", false)
	if target.Username != "" {
		h.Set("username", target.Username)
	}
	setProxyCaps(&h, client)
	link, warnings := ApplySessionOptions(&h, opts)
	return h, link, warnings
}

// LinkOptions are what session options change on the proxy↔server link.
type LinkOptions struct {
	// Level is the compression level requested from the server, or -1
	// when the options leave it to the client's hello.
	Level int
	// Password answers the server's challenge when the target URL has none.
	Password string
	// TLS to ssl:// and wss:// targets: skip verification (xpra's
	// --ssl-server-verify-mode=none), a CA file, the name to verify.
	VerifyNone          bool
	CACerts, ServerName string
	// Encryption ("AES", "AES-CBC", "AES-CTR") and its key file: xpra's
	// AES toward the server (docs/aes.md).
	Encryption, EncryptionKeyFile string
}

// Uncompressed reports whether the proxy↔server link must carry no
// compression (compression=0 or compression_level=0).
func (l *LinkOptions) Uncompressed() bool { return l != nil && l.Level == 0 }

// ApplySessionOptions applies a user's session options (sqlite and
// multifile session_options) to the hello for the server. xpra 3.1's own
// proxy ignores `compression=0` and crashes on `compression_level=0`; here
// both set the proxy↔server compression level. The encoder and compressor
// booleans of xpra's whitelist are copied into the hello. Unknown options
// are returned as warnings for the log and otherwise ignored.
func ApplySessionOptions(h *frame.Dict, opts []authn.Option) (*LinkOptions, []string) {
	link := &LinkOptions{Level: -1}
	var warnings []string
	for _, o := range opts {
		switch o.Key {
		case "compression", "compression_level":
			n, err := strconv.Atoi(o.Value)
			if err != nil || n < 0 || n > 9 {
				warnings = append(warnings, fmt.Sprintf("session option %s=%q is not a level 0-9; ignored", o.Key, o.Value))
				continue
			}
			link.Level = n
			h.Set("compression_level", n)
		case "lz4", "lzo", "zlib", "brotli", "rencode", "rencodeplus", "bencode", "yaml":
			b, err := strconv.ParseBool(o.Value)
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("session option %s=%q is not a boolean; ignored", o.Key, o.Value))
				continue
			}
			h.Set(o.Key, b)
		case "password":
			link.Password = o.Value
		case "ssl-server-verify-mode":
			// xpra's client option for ssl:// and wss:// targets.
			switch o.Value {
			case "none", "optional", "required":
				link.VerifyNone = o.Value == "none"
			default:
				warnings = append(warnings, fmt.Sprintf("session option %s=%q is not none, optional or required; ignored", o.Key, o.Value))
			}
		case "encryption":
			switch v := strings.ToUpper(o.Value); v {
			case "AES", "AES-CBC", "AES-CTR":
				link.Encryption = v
			default:
				warnings = append(warnings, fmt.Sprintf("session option %s=%q is not AES, AES-CBC or AES-CTR; ignored", o.Key, o.Value))
			}
		case "encryption-keyfile", "keyfile":
			link.EncryptionKeyFile = o.Value
		case "start-xpra":
			// The proxy's own: which xpra starts this user's sessions.
		case "ssl-ca-certs":
			link.CACerts = o.Value
		case "ssl-server-hostname":
			link.ServerName = o.Value
		default:
			warnings = append(warnings, fmt.Sprintf("unknown session option %q ignored", o.Key))
		}
	}
	return link, warnings
}

// ClientHello filters the server's hello before it reaches the client:
// aliases go (both links then use packet names) and the proxy adds its
// markers.
func ClientHello(server frame.Dict) frame.Dict {
	h := append(frame.Dict(nil), server...)
	h.DeleteFunc(func(k string) bool { return strings.HasPrefix(k, "aliases") })
	setProxyCaps(&h, server)
	return h
}

// setProxyCaps marks a hello as coming through the proxy, in the dialect
// of the peer whose hello peer is: xpra 6.x reads `proxy` as a dict of
// the proxy's info (6.x's own proxy, instance_base.py filter_caps), 3.1
// reads `proxy: True` and flat `proxy.*` keys. Both show "via <platform>
// proxy version <version>" and warn about a version older than their
// own generation, so the version is the peer's generation and the
// platform names xpraproxy and its own version.
func setProxyCaps(h *frame.Dict, peer frame.Dict) {
	host, _ := os.Hostname()
	version := ClaimedVersion(peer)
	platform := "xpraproxy " + Version + " on " + runtime.GOOS
	h.DeleteFunc(func(k string) bool { return k == "proxy" || strings.HasPrefix(k, "proxy.") })
	if Nested(peer) {
		h.Set("proxy", frame.NewDict("version", version, "build", frame.NewDict("version", version),
			"platform", platform, "hostname", host, "pid", os.Getpid(), "xpraproxy", frame.NewDict("version", Version)))
		return
	}
	h.Set("proxy", true)
	h.Set("proxy.version", version)
	h.Set("proxy.xpraproxy.version", Version)
	h.Set("proxy.hostname", host)
	h.Set("proxy.platform", platform)
	h.Set("proxy.pid", os.Getpid())
}
