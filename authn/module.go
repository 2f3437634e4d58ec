package authn

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
)

// ErrAuthFailed is a wrong password, an unknown user or a refusal by the
// module. Its text is what xpra sends the client.
var ErrAuthFailed = errors.New("authentication failed")

// Request is what a module sees of one login attempt.
type Request struct {
	// Username is the client's hello `username`.
	Username string
	// Peer describes the remote end ("tcp 127.0.0.1:4321"), for exec.
	Peer string
	// Verify reports in constant time whether a candidate password matches
	// the client's challenge response. It is nil for modules that send no
	// challenge, and for clients that sent no usable response.
	Verify func(password []byte) bool
	// Password is the client's password itself, for modules that need it
	// (CleartextModule); nil otherwise.
	Password []byte
	// Conn is the client's connection (hosts: its address; peercred: its
	// unix socket's credentials).
	Conn PeerConn
}

// PeerConn is what modules may ask of the client's connection.
type PeerConn interface {
	RemoteAddr() net.Addr
	Fd() int
}

// CleartextModule is a module that checks the password with another
// system (PAM, LDAP) and so needs it in clear: the client is challenged
// with the xor digest.
type CleartextModule interface {
	Module
	NeedsCleartext() bool
}

func needsCleartext(m Module) bool {
	c, ok := m.(CleartextModule)
	return ok && c.NeedsCleartext()
}

// KeyModule is a module that holds users' passwords (sqlite, sql): as
// xpra's authenticators' get_password, the password keys an encrypted
// client link when the listener has no key file (docs/aes.md).
type KeyModule interface {
	Module
	// EncryptionKey is username's password, nil when there is none
	// to use. It may block (a database query).
	EncryptionKey(username string) ([]byte, error)
}

// NeedsCleartext reports whether m checks passwords elsewhere (pam, ldap).
func NeedsCleartext(m Module) bool { return needsCleartext(m) }

// Identity is what a successful authentication yields: who the user is
// and, for modules that list them, the sessions the user may reach.
type Identity struct {
	Username string
	// UID and GID as the module gives them: numbers, names or "" (nobody).
	UID, GID string
	// Displays is the explicit session list (sqlite, multifile). When
	// Explicit is false the user's local sessions are looked up instead.
	Displays []string
	Explicit bool
	// Env and SessionOptions are the row's ';'-separated k=v pairs, in order.
	Env            []Option
	SessionOptions []Option
}

// Option is one key=value pair of an env or session option string.
type Option struct{ Key, Value string }

// ParseOptions splits xpra's "k=v;k2=v2" option strings.
func ParseOptions(s string) []Option {
	var out []Option
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		out = append(out, Option{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	return out
}

// Module is one authentication module, configured once and used for
// every connection of the listeners it is attached to. Modules may block
// (files, sqlite, exec): callers run Authenticate off the event loop.
type Module interface {
	// Name is the module name as configured ("sqlite").
	Name() string
	// Challenge reports whether the client must answer a password
	// challenge before Authenticate.
	Challenge() bool
	// Authenticate decides; errors other than ErrAuthFailed are
	// configuration or I/O problems, logged without the password.
	Authenticate(req Request) (*Identity, error)
}

// Identifier is a module that can find a user's sessions without a
// password, for a login another way proved (an SSH key): the user's row
// decides the target as for a password login. ErrAuthFailed: no such
// user.
type Identifier interface {
	Identify(username string) (*Identity, error)
}

// Spec is a parsed module string: "sqlite,filename=x" or
// "sqlite:filename=x" (both forms are xpra's).
type Spec struct {
	Name    string
	Options map[string]string
}

// ParseSpec parses a module string. The first ':' or ',' ends the name;
// options are comma-separated key=value pairs.
func ParseSpec(s string) (Spec, error) {
	s = strings.TrimSpace(s)
	name, rest := s, ""
	if i := strings.IndexAny(s, ":,"); i >= 0 {
		name, rest = s[:i], s[i+1:]
	}
	spec := Spec{Name: strings.ReplaceAll(strings.ToLower(name), "_", "-"), Options: map[string]string{}}
	if spec.Name == "" {
		return spec, fmt.Errorf("authn: empty module name in %q", s)
	}
	for _, kv := range strings.Split(rest, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return spec, fmt.Errorf("authn: module %s: option %q is not key=value", spec.Name, kv)
		}
		spec.Options[strings.TrimSpace(k)] = v
	}
	return spec, nil
}

func (s Spec) String() string {
	keys := make([]string, 0, len(s.Options))
	for k := range s.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{s.Name}
	for _, k := range keys {
		v := s.Options[k]
		switch {
		case k == "value" || strings.Contains(k, "password"):
			v = "***"
		case k == "uri":
			// A database URI's password (sql, mysql) stays out of logs.
			if u, err := url.Parse(v); err == nil {
				v = u.Redacted()
			} else {
				v = "***"
			}
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

// Env gives modules what they need from the process: its environment
// (env module) and the directory relative filenames resolve against, as
// xpra's exec_cwd.
type Env struct {
	Getenv func(string) string
	Dir    string
}

// CheckOptions rejects options a module does not know, so that a typo
// does not silently weaken authentication: every constructor calls it
// with the options it takes.
func (spec Spec) CheckOptions(known ...string) error {
	for k := range spec.Options {
		if !slices.Contains(known, k) {
			return fmt.Errorf("authn: module %s has no option %q (known: %s)", spec.Name, k, strings.Join(known, ", "))
		}
	}
	return nil
}
