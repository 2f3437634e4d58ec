package relay

// xpra's AES on the server link: a row's session options
// `encryption=AES[-MODE]` and `encryption-keyfile=FILE` make the proxy
// talk to the server as an xpra client started with --encryption does
// (docs/aes.md). The handshake runs in Dial, off the loop; the relay then
// reads and writes the server through a cipherConn, as an encrypted
// client's.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/xpraproxy/xpraproxy/frame"
)

// serverCipher is the proxy's side of an encrypted server link while it
// logs in.
type serverCipher struct {
	a   clientAES // the key and the dialect the proxy draws its parameters in
	r   cipherReader
	out *frame.Encryptor
}

func newServerCipher(link *LinkOptions, enc frame.Encoding, conn io.Reader, max int) (*serverCipher, error) {
	mode := "CBC"
	if m, ok := strings.CutPrefix(strings.ToUpper(link.Encryption), "AES-"); ok {
		mode = m
	}
	var key []byte
	var err error
	if link.EncryptionKeyFile != "" {
		if key, err = readKeyFile(link.EncryptionKeyFile); err != nil {
			return nil, err
		}
	}
	if len(key) == 0 {
		key = []byte(os.Getenv("XPRA_ENCRYPTION_KEY"))
	}
	if len(key) == 0 {
		return nil, errors.New("encryption key is missing")
	}
	nested := enc == frame.RencodePlus // a 6.x server's dialect
	if !nested && mode != "CBC" {
		return nil, fmt.Errorf("xpra 3.1 servers have no AES-%s", mode)
	}
	return &serverCipher{a: clientAES{key: key, nested: nested, mode: mode, stream: true,
		options: []string{frame.PaddingPKCS7}}, r: cipherReader{r: conn, max: max}}, nil
}

// hello adds fresh parameters for what the server sends to the proxy's
// hello, and reads the server with them from its next frame on.
func (c *serverCipher) hello(h frame.Dict) (frame.Dict, error) {
	r, spec, err := c.a.drawReceive()
	if err != nil {
		return nil, err
	}
	if c.r.dec, err = frame.NewDecryptor(spec); err != nil {
		return nil, err
	}
	out := append(frame.Dict(nil), h...)
	out.DeleteFunc(func(k string) bool { return k == "encryption" || k == "cipher" || strings.HasPrefix(k, "cipher.") })
	for _, kv := range c.a.capsFor(r) {
		out.Set(kv.Key.(string), kv.Value)
	}
	return out, nil
}

// serverCaps installs the server's parameters (a challenge's third
// element, or its hello) for what the proxy sends.
func (c *serverCipher) serverCaps(caps frame.Dict) error {
	sc, nested := clientCipherCaps(caps)
	if sc == nil {
		return errors.New("the server does not use or support encryption/password, cannot continue")
	}
	mode, _ := sc.Text("mode")
	if mode = strings.ToUpper(mode); mode == "" {
		mode = "CBC"
	}
	spec, err := clientSpec(sc, nested, mode, c.a.key)
	if err != nil {
		return err
	}
	c.out, err = frame.NewEncryptor(spec)
	return err
}

// seal encrypts a frame for the server once its parameters are known.
func (c *serverCipher) seal(b []byte) ([]byte, error) {
	if c.out == nil {
		return b, nil
	}
	return c.out.Seal(nil, b)
}

// conn is the loop's view of the server once logged in.
func (c *serverCipher) conn(server Conn) *cipherConn {
	return &cipherConn{Conn: server, in: c.r.dec, out: c.out, max: frame.AbsMaxPacketSize}
}

// cipherReader opens the server's frames for the handshake's blocking
// reader. It reads whole frames only, so that nothing past the server's
// hello is taken from the socket, and passes clear frames and text (a
// refusal before the server has a cipher) as they are.
type cipherReader struct {
	r     io.Reader
	dec   *frame.Decryptor
	max   int
	clear []byte
	hdr   [frame.HeaderSize]byte
}

func (c *cipherReader) Read(p []byte) (int, error) {
	if len(c.clear) == 0 {
		if c.dec == nil {
			return c.r.Read(p)
		}
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.clear)
	c.clear = c.clear[n:]
	return n, nil
}

func (c *cipherReader) next() error {
	if _, err := io.ReadFull(c.r, c.hdr[:]); err != nil {
		return err
	}
	h, err := frame.ParseHeader(c.hdr[:])
	if err != nil || c.hdr[0] != frame.Magic {
		c.clear, c.dec = append([]byte(nil), c.hdr[:]...), nil // text: the rest as it comes
		return nil
	}
	size := int(h.Size)
	if h.Flags&frame.FlagCipher != 0 {
		if size, _, err = c.dec.EncryptedLen(c.hdr[:], c.max); err != nil {
			return err
		}
		size -= frame.HeaderSize
	} else if err := h.Check(c.max); err != nil {
		return err
	}
	buf := make([]byte, frame.HeaderSize+size)
	copy(buf, c.hdr[:])
	if _, err := io.ReadFull(c.r, buf[frame.HeaderSize:]); err != nil {
		return err
	}
	if h.Flags&frame.FlagCipher == 0 {
		c.clear = buf // a clear refusal
		return nil
	}
	c.clear, _, err = c.dec.Open(nil, buf, c.max)
	return err
}

// ReadWriter is the logged-in link as clear xpra bytes, for a Go client
// that reads and writes it itself (the load generator; the proxy reads
// its servers through a cipherConn on the loop instead): reads open the
// peer's frames, writes are sealed in whatever pieces they come. It is
// Conn itself when the link is not encrypted. One goroutine may read while
// another writes.
func (b *Backend) ReadWriter() io.ReadWriter {
	if b.AES == nil {
		return b.Conn
	}
	b.AES.r.max = frame.AbsMaxPacketSize
	return &aesStream{r: &b.AES.r, out: b.AES.out, w: b.Conn}
}

// aesStream is Backend.ReadWriter's encrypted link.
type aesStream struct {
	r       *cipherReader
	out     *frame.Encryptor
	w       io.Writer
	scratch []byte
}

func (s *aesStream) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *aesStream) Write(p []byte) (int, error) {
	sealed, err := s.out.Seal(s.scratch[:0], p)
	if err != nil {
		return 0, err
	}
	if cap(sealed) <= 1<<20 {
		s.scratch = sealed
	}
	if _, err := s.w.Write(sealed); err != nil {
		return 0, err
	}
	return len(p), nil
}
