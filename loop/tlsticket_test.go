package loop

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/relay"
)

// countingCache is a client session cache that counts the session
// tickets a server sent (crypto/tls stores each NewSessionTicket).
type countingCache struct {
	tls.ClientSessionCache
	puts atomic.Int32
}

func (c *countingCache) Put(key string, cs *tls.ClientSessionState) {
	c.puts.Add(1)
	c.ClientSessionCache.Put(key, cs)
}

// The proxy sends no TLS 1.3 session ticket: a ticket arrives after the
// handshake, and an xpra 6.x client's read thread processing it while
// its write thread sends the hello uses one OpenSSL object from two
// threads, which now and then drops the hello (docs/loop.md, "TLS
// session tickets"). Failed before the fix: Go's server sends tickets.
func TestLoopTLSSendsNoSessionTicket(t *testing.T) {
	fs := startFakeServer(t, "")
	addr := startOnePort(t, fs, "")
	cache := &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	tc := tlsClientConfig(t, addr, &tls.Config{InsecureSkipVerify: true, ClientSessionCache: cache})
	// The login reads past the handshake: a ticket would be read (and
	// stored) with the proxy's first packets.
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %s", p)
	}
	if n := cache.puts.Load(); n != 0 {
		t.Errorf("the proxy sent %d TLS session tickets, want none", n)
	}
}

// openSSLFirstWrite is a client like xpra 6.x's: Python's ssl module
// (OpenSSL), a read thread started right after the handshake and the
// first write from another thread. Each connection sends an HTTP request
// (answered at once after the TLS handshake of an ssl port) and is
// counted lost when what came back is not its answer (the proxy's login
// timeout instead).
const openSSLFirstWrite = `
import socket, ssl, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
lost = []
def one(i):
    s = socket.create_connection((host, port), timeout=10)
    ss = ctx.wrap_socket(s, do_handshake_on_connect=False)
    got = []
    try:
        ss.do_handshake()
        ss.settimeout(None)
        def reader():
            try:
                got.append(ss.recv(65536))
            except Exception as e:
                got.append(repr(e).encode())
        r = threading.Thread(target=reader, daemon=True)
        r.start()
        ss.send(b"GET /missing HTTP/1.1\r\nHost: proxy\r\n\r\n")
        r.join(30)
    except Exception as e:
        got.insert(0, repr(e).encode())
    finally:
        s.close()
    if not got or not got[0].startswith(b"HTTP/1."):
        lost.append("%d: %r" % (i, got[:1]))
for batch in range(0, n, 4):
    ts = [threading.Thread(target=one, args=(i,)) for i in range(batch, min(n, batch + 4))]
    for t in ts: t.start()
    for t in ts: t.join()
print("lost %d of %d" % (len(lost), n))
for l in lost: print(l)
`

// An OpenSSL client that reads and writes from two threads at once, as
// xpra 6.x's does, always gets its first write through (the open bug of
// 2026-12-07: before the fix one connection in 7 to 150 lost it).
func TestLoopTLSOpenSSLClientFirstWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 (test.sh installs it with xpra): %v", err)
	}
	// Handshake and login timeouts of 5 s, so that only a lost
	// request, never a slow machine, makes a connection fail.
	tlsCfg, err := selfsigned.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://127.0.0.1:1/"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Limits: relay.Limits{LoginTimeout: 5 * time.Second, ChallengeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, MaxPacketSize: 1 << 20}}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort())
	srv := New([]Listener{{Network: "tcp", Address: addr, Kind: "ssl", Config: &cfg, TLS: tlsCfg}}, Options{HTTPTimeout: 5 * time.Second})
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	<-srv.Ready()
	t.Cleanup(func() { srv.Stop(context.Background()); <-errc })
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.CommandContext(ctx, py, "-c", openSSLFirstWrite, host, port, "120")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	if !bytes.HasPrefix(out, []byte("lost 0 of ")) {
		t.Errorf("first writes lost:\n%s", out)
	}
}
