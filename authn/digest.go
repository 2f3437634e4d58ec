// Package authn authenticates xpra clients the way xpra's proxy does:
// the challenge/response exchange, the authentication modules
// (--tcp-auth=NAME,opt=value), the sqlite user database and the lookup of
// the sessions a user may reach.
package authn

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"strings"
)

// Digest names one of xpra's challenge digests ("hmac+sha512", "xor", ...).
type Digest string

// The digests xpraproxy implements, strongest first: xpra's choose_digest
// order.
var hmacDigests = []Digest{"hmac+sha512", "hmac+sha384", "hmac+sha256", "hmac+sha224", "hmac+sha1", "hmac+md5"}

// DigestXOR sends the password xor'ed with the salt: only acceptable over
// TLS or to a local peer.
const DigestXOR Digest = "xor"

// Supported lists the digests this package can compute, for the hello
// caps `digest` and `salt-digest` the proxy sends to servers.
func Supported() []string {
	out := make([]string, 0, len(hmacDigests)+1)
	for _, d := range hmacDigests {
		out = append(out, string(d))
	}
	return append(out, "hmac")
}

func (d Digest) hash() func() hash.Hash {
	name := string(d)
	if i := strings.IndexByte(name, ':'); i >= 0 { // "u2f:xor": the algorithm is before ':'
		name = name[:i]
	}
	switch name {
	case "hmac+sha512":
		return sha512.New
	case "hmac+sha384":
		return sha512.New384
	case "hmac+sha256":
		return sha256.New
	case "hmac+sha224":
		return sha256.New224
	case "hmac+sha1":
		return sha1.New
	case "hmac+md5", "hmac":
		return md5.New
	}
	return nil
}

// ChooseDigest picks the strongest digest of offered that this package
// implements, as xpra's choose_digest does; xor only when allowXOR (a TLS or
// local link).
func ChooseDigest(offered []string, allowXOR bool) (Digest, error) {
	for _, d := range append(hmacDigests, "hmac") {
		if slices.Contains(offered, string(d)) {
			return d, nil
		}
	}
	if allowXOR && slices.Contains(offered, string(DigestXOR)) {
		return DigestXOR, nil
	}
	return "", fmt.Errorf("authn: no supported digest in %v", offered)
}

// Gen computes xpra's gendigest(digest, key, data): the lowercase hex of
// HMAC-H(key, data) for hmac digests, key xor data (data padded or cut to
// the key's length) for xor.
func Gen(d Digest, key, data []byte) ([]byte, error) {
	if h := d.hash(); h != nil {
		m := hmac.New(h, key)
		m.Write(data)
		return hex.AppendEncode(nil, m.Sum(nil)), nil
	}
	if d == DigestXOR {
		out := make([]byte, len(key))
		for i := range out {
			var b byte
			if i < len(data) {
				b = data[i]
			}
			out[i] = key[i] ^ b
		}
		return out, nil
	}
	return nil, fmt.Errorf("authn: unsupported digest %q", d)
}

// Salt returns n random bytes (xpra's server salts are 64 bytes, hmac
// client salts 32).
func Salt(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("authn: no randomness: " + err.Error())
	}
	return b
}

// Challenge is the server side of one challenge: the salt and digests the
// proxy sent, kept until the client answers.
type Challenge struct {
	ServerSalt []byte
	Digest     Digest
	SaltDigest Digest
}

// NewChallenge chooses the digests from the client's hello lists. A salt
// digest of xor is refused as xpra does ("insecure salt digest").
func NewChallenge(clientDigests, clientSaltDigests []string, allowXOR bool) (*Challenge, error) {
	d, err := ChooseDigest(clientDigests, allowXOR)
	if err != nil {
		return nil, err
	}
	sd, err := ChooseDigest(clientSaltDigests, false)
	if err != nil {
		return nil, fmt.Errorf("authn: insecure or missing salt digest: %w", err)
	}
	return &Challenge{ServerSalt: Salt(64), Digest: d, SaltDigest: sd}, nil
}

// Verifier returns a function that reports, in constant time, whether a
// candidate password produces the client's response. It returns nil when
// the client salt is unusable.
func (c *Challenge) Verifier(response, clientSalt []byte) func(password []byte) bool {
	if c == nil || len(clientSalt) < 16 || len(response) == 0 {
		return nil
	}
	combined, err := Gen(c.SaltDigest, clientSalt, c.ServerSalt)
	if err != nil {
		return nil
	}
	return func(password []byte) bool {
		want, err := Gen(c.Digest, password, combined)
		return err == nil && hmac.Equal(want, response)
	}
}

// Response computes the client side: what to send back for a server's
// challenge (salt, digest, salt digest) with password. It returns the
// response and the client salt to send with it.
func Response(password, serverSalt []byte, digest, saltDigest Digest) (response, clientSalt []byte, err error) {
	if saltDigest == DigestXOR || saltDigest == "" {
		return nil, nil, fmt.Errorf("authn: insecure salt digest %q refused", saltDigest)
	}
	clientSalt = Salt(32)
	combined, err := Gen(saltDigest, clientSalt, serverSalt)
	if err != nil {
		return nil, nil, err
	}
	response, err = Gen(digest, password, combined)
	return response, clientSalt, err
}

// Cleartext recovers the password from an xor response (xpra's sys
// authenticators need it to ask PAM or LDAP); ok is false for any other
// digest or an unusable response.
func (c *Challenge) Cleartext(response, clientSalt []byte) ([]byte, bool) {
	if c == nil || c.Digest != DigestXOR || len(clientSalt) < 16 || len(response) == 0 {
		return nil, false
	}
	combined, err := Gen(c.SaltDigest, clientSalt, c.ServerSalt)
	if err != nil {
		return nil, false
	}
	// xor is its own inverse: response xor salt is the password.
	out, err := Gen(DigestXOR, response, combined)
	return out, err == nil
}

// NewCleartextChallenge is the challenge of modules that need the password
// itself (pam, ldap): the xor digest, as xpra's sys authenticators send it
// whatever the link; xpra's client only answers it over TLS or locally.
func NewCleartextChallenge(clientDigests, clientSaltDigests []string) (*Challenge, error) {
	if !slices.Contains(clientDigests, string(DigestXOR)) {
		return nil, fmt.Errorf("authn: this authentication module needs the xor digest, which the client does not offer")
	}
	sd, err := ChooseDigest(clientSaltDigests, false)
	if err != nil {
		return nil, fmt.Errorf("authn: insecure or missing salt digest: %w", err)
	}
	return &Challenge{ServerSalt: Salt(64), Digest: DigestXOR, SaltDigest: sd}, nil
}
