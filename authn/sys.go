package authn

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-ldap/ldap/v3"
	"golang.org/x/sys/unix"
)

// Refusal is a failed authentication with a reason the client may see
// ("account expired"); it is ErrAuthFailed.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string        { return "authentication failed: " + r.Reason }
func (r *Refusal) Is(target error) bool { return target == ErrAuthFailed }

// Why is the reason of a Refusal, or "".
func Why(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

// ---- ldap / ldap3 ----

// ldapModule binds to an LDAP server with the user's DN and password, as
// xpra's ldap and ldap3 modules: host, port (389, or 636 with tls), tls,
// cacert, username_format ("cn=%username, o=%domain"); uid=/gid= give
// non-local accounts the account to run as (default nobody).
type ldapModule struct {
	name, host string
	port       int
	tls        bool
	cacert     string
	format     string
	uid, gid   string
}

func newLDAP(spec Spec, _ Env) (Module, error) {
	if err := spec.CheckOptions("host", "port", "tls", "cacert", "username_format", "uid", "gid", "encoding", "authentication"); err != nil {
		return nil, err
	}
	m := ldapModule{name: spec.Name, host: spec.Options["host"], cacert: spec.Options["cacert"],
		format: spec.Options["username_format"], uid: spec.Options["uid"], gid: spec.Options["gid"]}
	if m.host == "" {
		m.host = "localhost"
	}
	if m.format == "" {
		m.format = "cn=%username, o=%domain"
	}
	m.tls = spec.Options["tls"] == "1" || strings.EqualFold(spec.Options["tls"], "true")
	m.port = 389
	if m.tls {
		m.port = 636
	}
	if p, ok := spec.Options["port"]; ok {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("authn: %s: invalid port %q", spec.Name, p)
		}
		m.port = n
	}
	if a := spec.Options["authentication"]; a != "" && !strings.EqualFold(a, "SIMPLE") {
		return nil, fmt.Errorf("authn: %s: only SIMPLE authentication is supported", spec.Name)
	}
	return m, nil
}

func (m ldapModule) Name() string         { return m.name }
func (m ldapModule) Challenge() bool      { return true }
func (m ldapModule) NeedsCleartext() bool { return true }

// Domain is what %domain expands to in username_format: the host's
// domain, or "localdomain".
func Domain() string { return domain() }

func domain() string {
	h, _ := os.Hostname()
	if _, d, ok := strings.Cut(h, "."); ok {
		return d
	}
	return "localdomain"
}

func (m ldapModule) Authenticate(req Request) (*Identity, error) {
	if len(req.Password) == 0 || req.Username == "" || strings.ContainsAny(req.Username, ",=+<>#;\\\"") {
		return nil, ErrAuthFailed // an empty password would be an anonymous bind
	}
	addr := net.JoinHostPort(m.host, strconv.Itoa(m.port))
	d := &net.Dialer{Timeout: 10 * time.Second}
	var (
		conn *ldap.Conn
		err  error
	)
	if m.tls {
		cfg := &tls.Config{ServerName: m.host, MinVersion: tls.VersionTLS12}
		if m.cacert != "" {
			pem, rerr := os.ReadFile(m.cacert)
			if rerr != nil {
				return nil, fmt.Errorf("authn: ldap cacert: %w", rerr)
			}
			cfg.RootCAs = x509.NewCertPool()
			cfg.RootCAs.AppendCertsFromPEM(pem)
		}
		conn, err = ldap.DialURL("ldaps://"+addr, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(cfg))
	} else {
		conn, err = ldap.DialURL("ldap://"+addr, ldap.DialWithDialer(d))
	}
	if err != nil {
		return nil, fmt.Errorf("authn: ldap server %s: %w", addr, err)
	}
	defer conn.Close()
	conn.SetTimeout(10 * time.Second)
	dn := strings.NewReplacer("%username", req.Username, "%domain", domain()).Replace(m.format)
	if err := conn.Bind(dn, string(req.Password)); err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			return nil, ErrAuthFailed
		}
		return nil, fmt.Errorf("authn: ldap bind: %w", err)
	}
	uid, gid := m.uid, m.gid
	if uid == "" {
		uid = "nobody"
	}
	return &Identity{Username: req.Username, UID: uid, GID: gid}, nil
}

// ---- hosts ----

// hostsModule allows or denies by the peer's address with tcp wrappers'
// files (/etc/hosts.allow then /etc/hosts.deny, daemon name "xpra"), as
// xpra's hosts module does through libwrap: first match wins, no match
// allows.
type hostsModule struct{ allow, deny string }

func newHosts(spec Spec, _ Env) (Module, error) {
	if err := spec.CheckOptions("allow", "deny"); err != nil {
		return nil, err
	}
	m := hostsModule{allow: spec.Options["allow"], deny: spec.Options["deny"]}
	if m.allow == "" {
		m.allow = "/etc/hosts.allow"
	}
	if m.deny == "" {
		m.deny = "/etc/hosts.deny"
	}
	return m, nil
}

func (m hostsModule) Name() string    { return "hosts" }
func (m hostsModule) Challenge() bool { return false }

func (m hostsModule) Authenticate(req Request) (*Identity, error) {
	ip := peerIP(req)
	if ip == nil {
		return nil, &Refusal{Reason: "no peer address"}
	}
	if matchHostsFile(m.allow, ip) {
		return &Identity{Username: req.Username}, nil
	}
	if matchHostsFile(m.deny, ip) {
		return nil, &Refusal{Reason: "host not allowed"}
	}
	return &Identity{Username: req.Username}, nil
}

func peerIP(req Request) net.IP {
	if req.Conn == nil {
		return nil
	}
	if a, ok := req.Conn.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP
	}
	return nil
}

// matchHostsFile reports whether a "daemons : clients" line for xpra (or
// ALL) lists ip. Clients: ALL, LOCAL (loopback), an address, a prefix
// ending in "." ("192.168."), net/mask, with EXCEPT lists.
func matchHostsFile(path string, ip net.IP) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		daemons, clients, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if rest, _, found := strings.Cut(clients, ":"); found {
			clients = rest // options after a second colon
		}
		if !listMatches(daemons, func(d string) bool { return d == "ALL" || d == "xpra" }) {
			continue
		}
		if listMatches(clients, func(c string) bool { return clientMatches(c, ip) }) {
			return true
		}
	}
	return false
}

// listMatches evaluates "a, b EXCEPT c".
func listMatches(list string, match func(string) bool) bool {
	incl, excl, _ := strings.Cut(list, " EXCEPT ")
	in := false
	for _, w := range strings.FieldsFunc(incl, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if match(w) {
			in = true
		}
	}
	if !in {
		return false
	}
	return excl == "" || !listMatches(excl, match)
}

func clientMatches(c string, ip net.IP) bool {
	switch {
	case c == "ALL":
		return true
	case c == "LOCAL":
		return ip.IsLoopback()
	case strings.Contains(c, "/"):
		addr, mask, _ := strings.Cut(c, "/")
		n := net.ParseIP(addr)
		m := net.ParseIP(mask)
		if n == nil {
			return false
		}
		if m != nil {
			return n.Mask(net.IPMask(m.To4())).Equal(ip.Mask(net.IPMask(m.To4())))
		}
		_, cidr, err := net.ParseCIDR(c)
		return err == nil && cidr.Contains(ip)
	case strings.HasSuffix(c, "."):
		return strings.HasPrefix(ip.String(), c)
	}
	if n := net.ParseIP(c); n != nil {
		return n.Equal(ip)
	}
	return false
}

// ---- peercred ----

// peercredModule authenticates unix socket clients by their credentials
// (SO_PEERCRED), as xpra's peercred module: allow-uids / allow-gids (names
// or numbers, ":"- or ","-separated); without either, only the proxy's own
// uid. The session runs as the peer's uid and gid.
type peercredModule struct {
	uids, gids []int
}

func newPeercred(spec Spec, _ Env) (Module, error) {
	if err := spec.CheckOptions("allow-uids", "allow-gids"); err != nil {
		return nil, err
	}
	var m peercredModule
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == ',' })
	}
	for _, u := range split(spec.Options["allow-uids"]) {
		n, err := strconv.Atoi(u)
		if err != nil {
			pw, lerr := user.Lookup(u)
			if lerr != nil {
				return nil, fmt.Errorf("authn: peercred: unknown user %q", u)
			}
			n, _ = strconv.Atoi(pw.Uid)
		}
		m.uids = append(m.uids, n)
	}
	for _, g := range split(spec.Options["allow-gids"]) {
		n, err := lookupGroup(g)
		if err != nil {
			return nil, fmt.Errorf("authn: peercred: unknown group %q", g)
		}
		m.gids = append(m.gids, n)
	}
	if len(m.uids) == 0 && len(m.gids) == 0 {
		m.uids = []int{os.Getuid()}
	}
	return m, nil
}

func (m peercredModule) Name() string    { return "peercred" }
func (m peercredModule) Challenge() bool { return false }

func (m peercredModule) Authenticate(req Request) (*Identity, error) {
	if req.Conn == nil {
		return nil, &Refusal{Reason: "peercred needs a unix socket"}
	}
	if _, ok := req.Conn.RemoteAddr().(*net.UnixAddr); !ok {
		return nil, &Refusal{Reason: "peercred needs a unix socket"}
	}
	cred, err := unix.GetsockoptUcred(req.Conn.Fd(), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("authn: peercred: %w", err)
	}
	ok := false
	for _, u := range m.uids {
		ok = ok || int(cred.Uid) == u
	}
	for _, g := range m.gids {
		ok = ok || int(cred.Gid) == g
	}
	if !ok {
		return nil, &Refusal{Reason: fmt.Sprintf("uid %d is not allowed", cred.Uid)}
	}
	name := req.Username
	if u, err := user.LookupId(strconv.Itoa(int(cred.Uid))); err == nil {
		name = u.Username
	}
	return &Identity{Username: name, UID: strconv.Itoa(int(cred.Uid)), GID: strconv.Itoa(int(cred.Gid))}, nil
}
