package relay

// xpra's AES on the client link (docs/aes.md). The proxy answers a client
// that sends cipher caps as an xpra server does: it encrypts what it sends
// with the client's parameters, and gives the client parameters of its own
// (in the challenge, and again in the server's hello) for what it
// receives. The session's client Conn is then a cipherConn: below it the
// socket's ciphertext, above it clear frames, so that the login and the
// pipes work as on a clear link.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
)

// maxClientKeyIterations bounds the PBKDF2 iterations a client may ask
// of the proxy before login (xpra 3.1 sends 1,000, 6.x 10,000): the
// derivation runs on the loop.
const maxClientKeyIterations = 20000

// maxKeyFileSize bounds an encryption key file.
const maxKeyFileSize = 64 << 10

// clientAES is a session's encrypted client link.
type clientAES struct {
	conn    *cipherConn
	key     []byte   // only while preparing: never kept in a session
	nested  bool     // 6.x's "encryption" dict, else 3.1's flat "cipher.*"
	mode    string   // "CBC" or "CTR"
	stream  bool     // 6.x: one stream per direction (else an IV per packet)
	options []string // the client's padding options
	// next: receive parameters drawn by the process that handed the
	// client over, for the server's hello (the key is not here).
	next     *receiveParams
	nextSpec frame.CipherSpec
}

// clientEncryption is --tcp-encryption where it applies. xpra applies it
// to its ENCRYPTED_SOCKET_TYPES, tcp and ws; AES over WebSocket is not
// built here (docs/aes.md), so tcp only: the unix sockets (`xpra info`,
// local clients), TLS, SSH and QUIC links are not asked to encrypt.
func (s *Session) clientEncryption() string {
	if s.transport != "tcp" {
		return ""
	}
	return s.cfg.ClientEncryption
}

// encryptionKey finds the key for the client link as xpra's server does:
// the key file, else XPRA_ENCRYPTION_KEY.
func (s *Session) encryptionKey() ([]byte, error) {
	if f := s.cfg.EncryptionKeyFile; f != "" {
		b, err := readKeyFile(f)
		if err != nil {
			return nil, err
		}
		if len(b) > 0 {
			return b, nil
		}
	}
	if v := os.Getenv("XPRA_ENCRYPTION_KEY"); v != "" {
		return []byte(v), nil
	}
	if len(s.rowKey) > 0 {
		return s.rowKey, nil
	}
	return nil, errors.New("encryption key is missing")
}

// rowKeyModule is the module whose password row keys this hello's
// cipher (xpra's get_password), when neither a key file nor
// XPRA_ENCRYPTION_KEY does and it has not been looked up yet.
func (s *Session) rowKeyModule(caps frame.Dict) authn.KeyModule {
	if c, _ := clientCipherCaps(caps); c == nil || s.rowKey != nil || s.clientEncryption() == "" ||
		s.cfg.EncryptionKeyFile != "" || os.Getenv("XPRA_ENCRYPTION_KEY") != "" {
		return nil
	}
	for _, m := range s.cfg.Modules {
		if km, ok := m.(authn.KeyModule); ok {
			return km
		}
	}
	return nil
}

// lookupRowKey asks m for the user's password off the loop, then goes
// on with next.
func (s *Session) lookupRowKey(m authn.KeyModule, next func()) {
	prev := s.state
	var key []byte
	var err error
	user := s.user
	s.offLoop(WorkAuth, func() { key, err = m.EncryptionKey(user) }, func() {
		s.state = prev
		if err != nil {
			s.logger().Warn("cannot read the encryption key from the user database", "user", s.logUser(), "err", err)
		}
		s.rowKey = key
		if s.rowKey == nil {
			s.rowKey = []byte{} // looked up: none
		}
		next()
	}, nil)
}

// readKeyFile reads a key file as xpra's filedata_nocrlf does.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	defer f.Close()
	b := make([]byte, maxKeyFileSize+1)
	n, _ := f.Read(b)
	if n > maxKeyFileSize {
		return nil, fmt.Errorf("encryption key file %s is too large", path)
	}
	return []byte(strings.TrimRight(string(b[:n]), "\r\n")), nil
}

// clientCipherCaps returns the client's cipher caps in either dialect.
func clientCipherCaps(caps frame.Dict) (c frame.Dict, nested bool) {
	if d, ok := caps.Dict("encryption"); ok {
		if _, ok := d.Text("cipher"); ok {
			return d, true
		}
	}
	if _, ok := caps.Text("cipher"); !ok {
		return nil, false
	}
	// 3.1's flat keys, read as the nested ones.
	var d frame.Dict
	for _, k := range []string{"iv", "key_salt", "key_stretch_iterations", "padding", "padding.options"} {
		if v, ok := caps.Get("cipher." + k); ok {
			d.Set(k, v)
		}
	}
	v, _ := caps.Get("cipher")
	d.Set("cipher", v)
	return d, false
}

// cipherSetup is what a hello's cipher caps come to: worked out off the
// loop (the key derivations cost milliseconds each), installed on it.
type cipherSetup struct {
	aes  clientAES // all but conn
	out  *frame.Encryptor
	in   *frame.Decryptor
	caps frame.Dict // the parameters the client is given now
}

// prepareClientCipher handles a hello's cipher caps (xpra's verify_auth
// and 6.x's setup_encryption): the reason to refuse the client, or ""
// with the setup to install, nil when the link stays clear. It draws the
// parameters for the server's hello too, so that nothing is derived on
// the loop. It touches no session state.
func (s *Session) prepareClientCipher(caps frame.Dict) (*cipherSetup, string) {
	c, nested := clientCipherCaps(caps)
	want := s.clientEncryption()
	if c == nil {
		if want != "" {
			return nil, "missing encryption tokens"
		}
		return nil, ""
	}
	if want == "" && s.cfg.EncryptionKeyFile == "" {
		// With a key file and no --tcp-encryption, encryption is the
		// client's choice (3.1's server accepts it when it has a key).
		return nil, "the server does not support encryption on this connection"
	}
	name, _ := c.Text("cipher")
	mode, _ := c.Text("mode")
	name, mode = strings.ToUpper(name), strings.ToUpper(mode)
	if mode == "" {
		mode = "CBC"
	}
	if name != "AES" {
		return nil, "unsupported cipher"
	}
	if m, ok := strings.CutPrefix(strings.ToUpper(want), "AES-"); ok && m != mode {
		return nil, fmt.Sprintf("the server is configured for AES-%s not AES-%s as requested by the client", m, mode)
	}
	key, err := s.encryptionKey()
	if err != nil {
		s.logger().Warn("no encryption key for the client link", "err", err)
		return nil, "encryption key is missing"
	}
	spec, err := clientSpec(c, nested, mode, key)
	if err != nil {
		return nil, err.Error()
	}
	setup := &cipherSetup{aes: clientAES{key: key, nested: nested, mode: mode, stream: true, options: c.Texts("padding.options")}}
	if v, ok := c.Bool("stream"); ok {
		setup.aes.stream = v
	}
	if setup.out, err = frame.NewEncryptor(spec); err != nil {
		return nil, err.Error()
	}
	a := &setup.aes
	now, inSpec, err := a.drawReceive()
	if err == nil {
		setup.in, err = frame.NewDecryptor(inSpec)
	}
	var next receiveParams
	if err == nil {
		next, a.nextSpec, err = a.drawReceive()
	}
	if err != nil {
		return nil, err.Error()
	}
	a.next, a.key = &next, nil
	setup.caps = a.capsFor(now)
	return setup, ""
}

// installClientCipher makes the session's client link encrypted with
// setup, from the next byte each way. Loop only.
func (s *Session) installClientCipher(setup *cipherSetup) {
	if s.aes == nil {
		s.aes = &clientAES{conn: &cipherConn{Conn: s.client, max: s.cfg.loginPacketSize()}}
		s.client = s.aes.conn
	}
	conn := s.aes.conn
	*s.aes = setup.aes
	s.aes.conn = conn
	conn.out = setup.out
	conn.setIn(setup.in)
}

// clientSpec is the cipher the proxy sends with: the client's caps.
func clientSpec(c frame.Dict, nested bool, mode string, key []byte) (frame.CipherSpec, error) {
	iv, _ := c.Get("iv")
	ivb, _ := frame.AsBytes(iv)
	saltv, _ := c.Get("key_salt")
	salt, _ := frame.AsBytes(saltv)
	iterations, _ := c.Int("key_stretch_iterations")
	if iterations > maxClientKeyIterations {
		return frame.CipherSpec{}, fmt.Errorf("invalid number of iterations %d", iterations)
	}
	hash, _ := c.Text("key_hash")
	size := int64(32)
	if v, ok := c.Int("key_size"); ok {
		size = v
	}
	padding, ok := c.Text("padding")
	if !ok {
		padding = frame.PaddingLegacy
		if nested {
			padding = frame.PaddingPKCS7
		}
	}
	if padding != frame.PaddingPKCS7 && (nested || padding != frame.PaddingLegacy) {
		return frame.CipherSpec{}, fmt.Errorf("unsupported padding %q", padding)
	}
	k, err := frame.DeriveKey(key, salt, hash, int(size), int(iterations))
	if err != nil {
		return frame.CipherSpec{}, err
	}
	spec := frame.CipherSpec{Mode: mode, Key: k, IV: ivb, Padding: padding}
	spec.PadBlock, spec.Name = cipherShape(nested, mode)
	if nested {
		if stream, ok := c.Bool("stream"); ok && !stream {
			spec.PerPacketIV = true
		}
	}
	return spec, nil
}

// cipherShape is the padding block and the cipher's name in xpra's
// messages for a dialect and mode.
func cipherShape(nested bool, mode string) (int, string) {
	switch {
	case !nested:
		return 32, "AES"
	case mode == "CBC":
		return 16, "AES-CBC"
	}
	return 0, "AES-" + mode
}

// receiveParams are the parameters the client is told to send with.
type receiveParams struct {
	IV         string `json:"iv"`
	Salt       []byte `json:"salt"`
	Iterations int64  `json:"iterations"`
	Padding    string `json:"padding"`
}

// drawReceive draws fresh receive parameters (xpra's new_cipher_caps)
// and the decryptor's spec for them.
func (a *clientAES) drawReceive() (receiveParams, frame.CipherSpec, error) {
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return receiveParams{}, frame.CipherSpec{}, err
	}
	r := receiveParams{IV: hex.EncodeToString(raw[:]), Salt: make([]byte, 64), Iterations: 1000, Padding: frame.PaddingPKCS7}
	if _, err := rand.Read(r.Salt); err != nil {
		return r, frame.CipherSpec{}, err
	}
	if a.nested {
		r.Iterations = 10000
	}
	if !a.nested && !contains(a.options, frame.PaddingPKCS7) && contains(a.options, frame.PaddingLegacy) {
		r.Padding = frame.PaddingLegacy
	}
	k, err := frame.DeriveKey(a.key, r.Salt, "SHA1", 32, int(r.Iterations))
	if err != nil {
		return r, frame.CipherSpec{}, err
	}
	spec := frame.CipherSpec{Mode: a.mode, Key: k, IV: []byte(r.IV), Padding: r.Padding, PerPacketIV: !a.stream}
	spec.PadBlock, spec.Name = cipherShape(a.nested, a.mode)
	return r, spec, nil
}

// newReceiveCaps installs the parameters drawn for the server's hello
// (prepareClientCipher, or the process that handed the client over) as
// the proxy's decryptor, and returns them in the client's dialect.
func (a *clientAES) newReceiveCaps() (frame.Dict, error) {
	if a.next == nil {
		return nil, errors.New("no receive parameters drawn")
	}
	r := *a.next
	a.next = nil
	in, err := frame.NewDecryptor(a.nextSpec)
	if err != nil {
		return nil, err
	}
	a.nextSpec = frame.CipherSpec{}
	a.conn.setIn(in)
	return a.capsFor(r), nil
}

// capsFor is receive parameters in the client's dialect.
func (a *clientAES) capsFor(r receiveParams) frame.Dict {
	if !a.nested {
		return frame.NewDict("cipher", "AES", "cipher.iv", r.IV, "cipher.key_salt", r.Salt,
			"cipher.key_stretch_iterations", r.Iterations, "cipher.padding", r.Padding,
			"cipher.padding.options", []any{frame.PaddingPKCS7, frame.PaddingLegacy})
	}
	return frame.NewDict("encryption", frame.NewDict("cipher", "AES", "mode", a.mode, "mode.options", []any{"CBC", "CTR"},
		"iv", r.IV, "key_salt", r.Salt, "key_hash", "SHA1", "key_size", int64(32), "key_stretch", "PBKDF2",
		"key_stretch.options", []any{"PBKDF2"}, "key_stretch_iterations", r.Iterations, "stream", a.stream,
		"padding", r.Padding, "padding.options", []any{frame.PaddingPKCS7}))
}

// AESLink is an encrypted client link on its way to a root proxy's
// worker: the stream the proxy sends with, where it is, and the receive
// parameters (drawn by the main process) that the server's hello will
// give the client. The listener's key stays in the main process: only
// this connection's derived keys travel.
type AESLink struct {
	Out     frame.CipherSpec `json:"out"`
	In      frame.CipherSpec `json:"in"`
	Receive receiveParams    `json:"receive"`
	Nested  bool             `json:"nested"`
	Mode    string           `json:"mode"`
	Stream  bool             `json:"stream"`
}

// handoffAES describes the client's cipher for a worker.
func (a *clientAES) handoff() (*AESLink, error) {
	out, err := a.conn.out.Resume()
	if err != nil {
		return nil, err
	}
	if a.next == nil {
		return nil, errors.New("no receive parameters drawn")
	}
	return &AESLink{Out: out, In: a.nextSpec, Receive: *a.next, Nested: a.nested, Mode: a.mode, Stream: a.stream}, nil
}

// adoptAES resumes a handed-over encrypted link: the worker encrypts on,
// and reads nothing until the server's hello gives the client its
// parameters.
func adoptAES(client Conn, l *AESLink, max int) (*clientAES, error) {
	out, err := frame.NewEncryptor(l.Out)
	if err != nil {
		return nil, err
	}
	r := l.Receive
	return &clientAES{conn: &cipherConn{Conn: client, out: out, max: max}, nested: l.Nested, mode: l.Mode,
		stream: l.Stream, next: &r, nextSpec: l.In}, nil
}

func contains(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

// addClientCipher puts fresh receive caps into the server's hello for an
// encrypted client, which sends with them from then on (xpra's proxy
// does the same, process_server_packet).
func (s *Session) addClientCipher(h *frame.Dict) error {
	h.DeleteFunc(func(k string) bool { return k == "encryption" || k == "cipher" || strings.HasPrefix(k, "cipher.") })
	if s.aes == nil {
		return nil
	}
	caps, err := s.aes.newReceiveCaps()
	if err != nil {
		return fmt.Errorf("relay: client cipher: %w", err)
	}
	for _, kv := range caps {
		h.Set(kv.Key.(string), kv.Value)
	}
	return nil
}
