package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

// siegeKey is the AES key of the siege's listener: clients may encrypt.
const siegeKey = "the siege key"

func siegeKeyFile(t *testing.T) string {
	f := filepath.Join(env.dir, "siege-aes.key")
	if err := os.WriteFile(f, []byte(siegeKey), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// aesHello is a 6.x client's hello asking for AES-CBC with these
// parameters, and the decryptor of what the proxy answers with them.
func aesHello(user string, iterations int64) ([]byte, *frame.Decryptor) {
	iv, salt := "0123456789abcdef", make([]byte, 64)
	rand.Read(salt)
	caps := xpratest.Hello6(user)
	caps.Set("encryption", frame.NewDict("cipher", "AES", "mode", "CBC", "iv", iv, "key_salt", salt,
		"key_hash", "SHA1", "key_size", int64(32), "key_stretch", "PBKDF2", "key_stretch_iterations", iterations,
		"padding", frame.PaddingPKCS7, "padding.options", []any{frame.PaddingPKCS7}, "stream", true))
	hello, _ := (&frame.Writer{Encoding: frame.RencodePlus}).AppendPacket(nil, frame.Packet{"hello", caps})
	key, err := frame.DeriveKey([]byte(siegeKey), salt, "SHA1", 32, 1000)
	if err != nil {
		return hello, nil
	}
	dec, _ := frame.NewDecryptor(frame.CipherSpec{Mode: "CBC", Key: key, IV: []byte(iv), PadBlock: 16, Padding: frame.PaddingPKCS7})
	return hello, dec
}

// openAll decrypts and decodes the packets of an encrypted answer.
func openAll(dec *frame.Decryptor, b []byte) string {
	var r frame.Reader
	var out []string
	for len(b) > 0 {
		clear, n, err := dec.Open(nil, b, 0)
		if errors.Is(err, frame.ErrUnencrypted) {
			// A refusal before any cipher (the throttle's): clear.
			clear, n, err = b, len(b), nil
		}
		if err != nil {
			out = append(out, "undecryptable: "+err.Error())
			break
		}
		b = b[n:]
		if p, _, err := r.Next(clear); err == nil && p != nil {
			out = append(out, fmt.Sprint([]any(p)...))
		}
	}
	return strings.Join(out, "; ")
}

// aesCase: encrypted clients that send garbage in place of their
// encrypted answer (what a wrong key looks like to the proxy), and
// clients that ask for a million PBKDF2 iterations. Each is told why in
// a disconnect (encrypted with its own parameters, which the test can
// read) and closed; the rest go on.
func aesCase(s *siege) string {
	conns := s.rawDial(60, s.tenAddresses())
	defer hold(conns)()
	answers := parallel(conns, func(c net.Conn) string {
		hello, dec := aesHello("aes-attacker", 1000)
		c.Write(hello)
		// The challenge, encrypted: wait for some of it.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		first := make([]byte, 4096)
		n, _ := c.Read(first)
		junk := make([]byte, 333+16-333%16)
		rand.Read(junk)
		f := frame.Header{Flags: frame.FlagRencodePlus | frame.FlagCipher, Size: 333}.Append(nil)
		c.Write(append(f, junk...))
		rest, _ := readAll(c, 10*time.Second)
		return openAll(dec, append(first[:n], rest...))
	})
	// Each is told of its wrong key; once the throttle has counted enough
	// of them, a hello is refused before any cipher, in clear.
	wrongKey, throttled := 0, 0
	for _, a := range answers {
		switch {
		case strings.Contains(a, "encryption padding error - wrong key?"):
			wrongKey++
		case strings.Contains(a, "too many failed logins"):
			throttled++
		default:
			s.failf("aes wrong key: answer %q names neither the wrong key nor the throttle", truncate(a, 300))
		}
	}
	got := fmt.Sprintf("60 wrong keys: %d told \"encryption padding error - wrong key?\", %d throttled", wrongKey, throttled)
	slow := s.rawDial(20, s.tenAddresses())
	defer hold(slow)()
	start := time.Now()
	costly := parallel(slow, func(c net.Conn) string {
		// Another user: the wrong keys above count as failed logins
		// (throttled) for theirs.
		hello, _ := aesHello("aes-costly", 1_000_000)
		c.Write(hello)
		out, _ := readAll(c, 10*time.Second)
		return out
	})
	got += "; " + s.expectAll("aes iterations", costly, "invalid number of iterations")
	s.correctLogin("after the aes attacks")
	if bytes.Contains([]byte(s.p.logText()), []byte(siegeKey)) {
		s.failf("the AES key reached the proxy's log")
	}
	return got + fmt.Sprintf(" (the costly ones answered within %v)", time.Since(start).Round(time.Millisecond))
}
