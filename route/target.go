package route

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// Target is where a session lives: parsed from a displays entry
// ("tcp://user:pass@host:port/", "tcp:host:port", "socket:/path", ":N").
type Target struct {
	// Network is "tcp", "unix", or "udp" (quic://).
	Network string
	// Address is host:port for tcp, the socket path for unix (empty for
	// ":N", which is resolved against the socket dirs).
	Address string
	// Display is ":N" for local displays, else the entry as given.
	Display string
	// Username and Password are the backend's own credentials from the
	// URL; the password answers the server's challenge.
	Username string
	Password string
	// Scheme as written (tcp, ssl, ws, wss, quic, socket), for logs and for
	// the transports later issues add.
	Scheme string
}

// String describes the target without its password.
func (t Target) String() string {
	user := ""
	if t.Username != "" {
		user = t.Username + "@"
	}
	switch t.Network {
	case "unix":
		if t.Address == "" {
			return t.Display
		}
		return "socket://" + t.Address
	}
	return t.Scheme + "://" + user + t.Address + "/"
}

const defaultPort = 14500

// ParseTarget parses a display string the way xpra's parse_display_name
// does for the forms a proxy connects to.
func ParseTarget(s string) (Target, error) {
	s = strings.TrimSpace(s)
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("route: invalid display string %q: %s", RedactDisplay(s), why)
	}
	if s == "" {
		return bad("empty")
	}
	if strings.HasPrefix(s, ":") {
		if _, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(s, ".", 2)[0], ":")); err != nil {
			return bad("display number expected after ':'")
		}
		return Target{Network: "unix", Display: s, Scheme: "socket"}, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return Target{Network: "unix", Display: ":" + s, Scheme: "socket"}, nil
	}
	scheme, rest, ok := cutScheme(s)
	if !ok {
		return bad("no scheme")
	}
	switch scheme {
	case "socket", "unix":
		path := strings.TrimPrefix(rest, "//")
		if path == "" || !filepath.IsAbs(path) {
			return bad("socket path must be absolute")
		}
		return Target{Network: "unix", Address: path, Display: s, Scheme: "socket"}, nil
	case "tcp", "ssl", "ws", "wss", "quic":
	default:
		return bad("unsupported scheme " + scheme)
	}
	t := Target{Network: "tcp", Display: s, Scheme: scheme}
	if scheme == "quic" {
		t.Network = "udp" // xpra's quic:// (relay/quic.go)
	}
	if strings.HasPrefix(rest, "//") {
		u, err := url.Parse(scheme + ":" + rest)
		if err != nil {
			return bad(err.Error())
		}
		if u.User != nil {
			t.Username = u.User.Username()
			t.Password, _ = u.User.Password()
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			return bad("no host")
		}
		if port == "" {
			port = strconv.Itoa(defaultPort)
		}
		t.Address = net.JoinHostPort(host, port)
		return t, checkPort(t)
	}
	// tcp:host:port (xpra's legacy form), optionally user@host.
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		cred := rest[:i]
		rest = rest[i+1:]
		t.Username, t.Password, _ = strings.Cut(cred, ":")
	}
	host, port, ok := strings.Cut(strings.TrimSuffix(rest, "/"), ":")
	if !ok {
		port = strconv.Itoa(defaultPort)
	}
	if host == "" {
		return bad("no host")
	}
	t.Address = net.JoinHostPort(host, port)
	return t, checkPort(t)
}

func checkPort(t Target) error {
	_, p, _ := net.SplitHostPort(t.Address)
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("route: invalid display string %q: bad port %q", t.Display, p)
	}
	return nil
}

// cutScheme splits "scheme://rest", "scheme:rest" or "scheme/rest".
func cutScheme(s string) (scheme, rest string, ok bool) {
	i := strings.IndexAny(s, ":/")
	if i <= 0 {
		return "", "", false
	}
	scheme = strings.ToLower(s[:i])
	rest = s[i+1:]
	if s[i] == ':' && strings.HasPrefix(rest, "//") {
		return scheme, rest, true
	}
	if s[i] == '/' {
		return scheme, "//" + rest, true
	}
	return scheme, rest, true
}

// RedactDisplay returns a displays entry fit for a log line, an info
// reply or an error: the password of "scheme://user:password@host/" and
// any password-like query option are replaced by "***". Backend
// credentials never leave the proxy.
func RedactDisplay(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	head, rest := s[:i+3], s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		if c := strings.IndexByte(authority[:at], ':'); c >= 0 {
			authority = authority[:c] + ":***" + authority[at:]
		}
	}
	if q := strings.IndexByte(tail, '?'); q >= 0 {
		opts := strings.Split(tail[q+1:], "&")
		for j, kv := range opts {
			k, _, ok := strings.Cut(kv, "=")
			if ok && (strings.Contains(strings.ToLower(k), "password") || strings.Contains(strings.ToLower(k), "passwd") ||
				strings.Contains(strings.ToLower(k), "secret") || strings.Contains(strings.ToLower(k), "key")) {
				opts[j] = k + "=***"
			}
		}
		tail = tail[:q+1] + strings.Join(opts, "&")
	}
	return head + authority + tail
}
