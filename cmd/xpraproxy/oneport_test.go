package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert makes a self-signed certificate and key for 127.0.0.1 in the
// test directory, readable by the proxy's user.
func writeCert(t *testing.T) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cert := filepath.Join(env.dir, fmt.Sprintf("cert-%d.pem", time.Now().UnixNano()))
	keyf := strings.TrimSuffix(cert, ".pem") + ".key"
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644)
	return cert, keyf
}

// The real xpra 3.1.3 GTK client attaches through one port with tcp://,
// ws://, ssl:// and wss://, and sees the server's window pixel for pixel.
func TestOnePortRealClient(t *testing.T) {
	a := srv(t, "sessionA")
	cert, key := writeCert(t)
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)},
		// The proxy reaches the real server over WebSocket too (xpra's tcp
		// sockets accept the upgrade).
		[]string{"wsuser", "pw", "nobody", "nogroup", fmt.Sprintf("ws://127.0.0.1:%d/", a.port)})
	p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--ssl-cert="+cert, "--ssl-key="+key)
	for _, scheme := range []string{"tcp", "ws", "ssl", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			url := fmt.Sprintf("%s://foo:bar@127.0.0.1:%d/", scheme, p.port)
			c := attach(t, url, "--ssl-server-verify-mode=none")
			pixelsMatch(t, a, c, fmt.Sprintf("sessionA on %s://foo@127.0.0.1:%d/", scheme, p.port))
			if !c.running() {
				t.Fatalf("client exited:\n%s", tail([]byte(c.text()), 2000))
			}
			c.stop()
		})
	}
	t.Run("ws target", func(t *testing.T) {
		c := attach(t, fmt.Sprintf("wss://wsuser:pw@127.0.0.1:%d/", p.port), "--ssl-server-verify-mode=none")
		pixelsMatch(t, a, c, fmt.Sprintf("sessionA on wss://wsuser@127.0.0.1:%d/", p.port))
		if !strings.Contains(p.logText(), "target=ws://127.0.0.1:") {
			t.Errorf("the proxy did not relay to the ws target:\n%s", tail([]byte(p.logText()), 1500))
		}
		c.stop()
	})
	if log := p.logText(); strings.Contains(log, "=bar") {
		t.Errorf("a password reached the log")
	}
}
