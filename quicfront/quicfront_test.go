package quicfront

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/webtransport-go"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/xprahello"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
)

// front is a QUIC listener in front of a loop.Server whose one user foo
// (password bar) reaches a fake xpra server.
type front struct {
	*Server
	streams *loop.Server
	addr    string
	html    string
}

var clientTLS = &tls.Config{InsecureSkipVerify: true} // the test's own self-signed certificate

func startFront(t *testing.T, o Options) *front {
	t.Helper()
	fs := xpratest.NewServer(t, xpratest.ServerOptions{})
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("foo|bar|||tcp://"+fs.Addr()+"/\n"), 0o600)
	m, err := authn.New(authn.Spec{Name: "multifile", Options: map[string]string{"filename": users}}, authn.Env{})
	if err != nil {
		t.Fatal(err)
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := relay.Config{Modules: []authn.Module{m}, Log: discard, Encrypted: true}
	cfg.LoginTimeout, cfg.ChallengeTimeout, cfg.ConnectTimeout, cfg.MaxPacketSize = 10*time.Second, 10*time.Second, 5*time.Second, 16<<20
	srv := loop.New(nil, loop.Options{Log: discard, Loops: 2})
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
	})
	tc, err := selfsigned.Config()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	html := t.TempDir()
	os.WriteFile(filepath.Join(html, "index.html"), []byte("<html>xpra</html>"), 0o644)
	o.Conn, o.TLS, o.Config, o.Streams, o.Log = pc, tc, &cfg, srv, discard
	if o.HTML == "-" {
		o.HTML = ""
	} else {
		o.HTML = html
	}
	f, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	go f.Serve()
	t.Cleanup(func() { f.Close() })
	return &front{Server: f, streams: srv, addr: pc.LocalAddr().String(), html: html}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// xpra 6's quic:// exchange: the CONNECT is answered 200 with the xpra
// subprotocol, the login and a ping go through WebSocket frames in
// HTTP/3 DATA, and when the client goes the session and the
// connection's pending slot are gone.
func TestQUICSession(t *testing.T) {
	f := startFront(t, Options{})
	c, err := xpratest.DialQUIC(f.addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	if f.Pending() != 0 {
		t.Errorf("a connection with its session still counts as pending: %d", f.Pending())
	}
	p, err := c.Login("foo", "bar", xpratest.Hello6("foo"))
	if err != nil || p.Type() != "hello" {
		t.Fatalf("login: %v %v", p, err)
	}
	if err := c.Ping(5 * time.Second); err != nil {
		t.Fatalf("ping: %v", err)
	}
	big := strings.Repeat("x", 3<<20) // more than every flow-control window
	c.Send(frame.Packet{"ping", 1, 0, big})
	if p, err := c.Recv(10 * time.Second); err != nil || p.Type() != "ping_echo" {
		t.Fatalf("big ping: %v %v", p, err)
	}
	infos := f.streams.SessionsInfo()
	if len(infos) != 1 || !strings.Contains(fmt.Sprint(infos[0].Value), "peer udp 127.0.0.1:") {
		t.Errorf("the session's info does not show its UDP peer: %v", infos)
	}
	c.Close()
	waitFor(t, "the session to end", func() bool { return f.streams.Sessions() == 0 })
	if f.Sessions.Load() != 1 {
		t.Errorf("%d sessions counted", f.Sessions.Load())
	}
}

// A wrong password ends with xpra's disconnect and its reason, in a
// WebSocket frame, then the stream's end.
func TestQUICWrongPassword(t *testing.T) {
	f := startFront(t, Options{})
	c, err := xpratest.DialQUIC(f.addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := c.Login("foo", "wrong", xpratest.Hello6("foo"))
	if err != nil || p.Type() != "disconnect" || !strings.Contains(fmt.Sprint(p...), "authentication failed") {
		t.Fatalf("wrong password: %v %v", p, err)
	}
	waitFor(t, "the session to end", func() bool { return f.streams.Sessions() == 0 })
}

// CONNECTs that cannot be sessions are refused with a status, as xpra's
// server does; a second CONNECT on a connection that has its session is
// refused too (one session per connection).
func TestQUICConnectRefusals(t *testing.T) {
	f := startFront(t, Options{})
	for _, tc := range []struct {
		name, protocol, sub string
		status              int
	}{
		{"subprotocol", "websocket", "binary", http.StatusBadRequest},
		{"protocol", "connect-udp", "xpra", http.StatusNotImplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := xpratest.DialQUICConn(f.addr, clientTLS)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Conn.CloseWithError(0, "")
			_, resp, err := q.Connect(tc.protocol, tc.sub, "/")
			if err != nil || resp.StatusCode != tc.status {
				t.Fatalf("got %v %v, want %d", resp, err, tc.status)
			}
		})
	}
	t.Run("second CONNECT", func(t *testing.T) {
		q, err := xpratest.DialQUICConn(f.addr, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Conn.CloseWithError(0, "")
		if _, resp, err := q.Connect("websocket", "xpra", "/"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("first: %v %v", resp, err)
		}
		if _, resp, err := q.Connect("websocket", "xpra", "/"); err != nil || resp.StatusCode != http.StatusConflict {
			t.Fatalf("second: %v %v", resp, err)
		}
	})
}

// HTTP/3 GETs are served from --html's directory through the shared
// file cache.
func TestQUICFiles(t *testing.T) {
	f := startFront(t, Options{})
	q, err := xpratest.DialQUICConn(f.addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Conn.CloseWithError(0, "")
	get := func(method, path string) (int, string, string) {
		req := &http.Request{Method: method, URL: &url.URL{Scheme: "https", Host: f.addr, Path: path}, Header: http.Header{}, Host: f.addr}
		resp, err := q.Client.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	if code, ctype, body := get("GET", "/"); code != 200 || body != "<html>xpra</html>" || !strings.HasPrefix(ctype, "text/html") {
		t.Errorf("GET /: %d %q %q", code, ctype, body)
	}
	if code, _, _ := get("GET", "/../../etc/passwd"); code != 404 {
		t.Errorf("a path out of the directory: %d", code)
	}
	if code, _, _ := get("GET", "/missing.js"); code != 404 {
		t.Errorf("missing file: %d", code)
	}
	if code, _, _ := get("DELETE", "/index.html"); code != 405 {
		t.Errorf("DELETE: %d", code)
	}
	f2 := startFront(t, Options{HTML: "-"})
	q2, err := xpratest.DialQUICConn(f2.addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Conn.CloseWithError(0, "")
	resp, err := q2.Client.RoundTrip(&http.Request{Method: "GET", URL: &url.URL{Scheme: "https", Host: f2.addr, Path: "/"}, Header: http.Header{}, Host: f2.addr})
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("without --html: %v %v", resp, err)
	}
}

// A connection that opens no session, and a request stream whose CONNECT
// never finishes, end at the login timeout; only that connection.
func TestQUICNoSession(t *testing.T) {
	f := startFront(t, Options{LoginTimeout: time.Second})
	idle, err := xpratest.DialQUICConn(f.addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	half, err := xpratest.DialQUICConn(f.addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	str, err := half.Conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// The start of a HEADERS frame (type 1, length 200) and no more.
	str.Write([]byte{0x01, 0x40, 200, 0, 0})
	good, err := xpratest.DialQUIC(f.addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if p, err := good.Login("foo", "bar", xpratest.Hello6("foo")); err != nil || p.Type() != "hello" {
		t.Fatalf("login: %v %v", p, err)
	}
	for name, q := range map[string]*xpratest.QUICConn{"idle": idle, "unfinished CONNECT": half} {
		select {
		case <-q.Conn.Context().Done():
		case <-time.After(5 * time.Second):
			t.Errorf("%s connection still open", name)
		}
	}
	if f.TimedOut.Load() != 2 {
		t.Errorf("%d connections timed out, want 2", f.TimedOut.Load())
	}
	if err := good.Ping(5 * time.Second); err != nil {
		t.Errorf("the session beside them: %v", err)
	}
	waitFor(t, "no pending connection", func() bool { return f.Pending() == 0 })
}

// Connections without a session are capped per address; a refused
// attempt ends only itself, and the slot comes back when one closes.
func TestQUICPerSourceCap(t *testing.T) {
	f := startFront(t, Options{MaxPerSource: 2})
	var open []*xpratest.QUICConn
	for range 2 {
		q, err := xpratest.DialQUICConn(f.addr, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, q)
	}
	if q, err := xpratest.DialQUICConn(f.addr, clientTLS); err == nil {
		q.Conn.CloseWithError(0, "")
		t.Fatal("a third connection without a session was admitted")
	}
	if f.Refused.Load() == 0 {
		t.Error("no refusal counted")
	}
	open[0].Conn.CloseWithError(0, "")
	waitFor(t, "the slot to come back", func() bool { return f.Pending() == 1 })
	c, err := xpratest.DialQUIC(f.addr, clientTLS)
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	c.Close()
	open[1].Conn.CloseWithError(0, "")
}

// With Retry engaged a client proves its address first and still
// connects.
func TestQUICRetry(t *testing.T) {
	f := startFront(t, Options{RetryAbove: -1})
	c, err := xpratest.DialQUIC(f.addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p, err := c.Login("foo", "bar", xpratest.Hello6("foo")); err != nil || p.Type() != "hello" {
		t.Fatalf("login after a Retry: %v %v", p, err)
	}
	if f.Retried.Load() == 0 {
		t.Error("no Retry was sent")
	}
}

// wtConn is a WebTransport stream as the net.Conn xpratest's client
// wants.
type wtConn struct {
	*webtransport.Stream
	sess *webtransport.Session
}

func (c wtConn) Close() error         { return c.sess.CloseWithError(0, "") }
func (c wtConn) LocalAddr() net.Addr  { return c.sess.LocalAddr() }
func (c wtConn) RemoteAddr() net.Addr { return c.sess.RemoteAddr() }

// The HTML5 client's WebTransport (js/WebTransport.js): a session, one
// bidirectional stream, raw xpra packets (rencodeplus) on it; a page of
// another origin is refused.
func TestQUICWebTransport(t *testing.T) {
	f := startFront(t, Options{})
	tc := clientTLS.Clone()
	tc.NextProtos = []string{"h3"}
	tr := &webtransport.Transport{TLSClientConfig: tc,
		QUICConfig: &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true}}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, sess, err := tr.Dial(ctx, "https://"+f.addr+"/", nil)
	if err != nil {
		t.Fatalf("dial: %v %v", resp, err)
	}
	str, err := sess.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := xpratest.NewClient(wtConn{str, sess}, nil)
	c.Writer = xprahello.Writer(xprahello.Gen6, 1)
	if p, err := c.Login("foo", "bar", xpratest.Hello6("foo")); err != nil || p.Type() != "hello" {
		t.Fatalf("login over WebTransport: %v %v", p, err)
	}
	if err := c.Ping(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := f.streams.Sessions(); n != 1 {
		t.Errorf("%d sessions", n)
	}
	c.Close()
	waitFor(t, "the session to end", func() bool { return f.streams.Sessions() == 0 })

	resp, _, err = tr.Dial(ctx, "https://"+f.addr+"/", http.Header{"Origin": {"https://elsewhere.example"}})
	if err == nil || resp == nil || resp.StatusCode == http.StatusOK {
		t.Errorf("a cross-origin page was accepted: %v %v", resp, err)
	}
}

// A WebTransport session that never opens its stream ends at the login
// timeout, connection and all.
func TestQUICWebTransportNoStream(t *testing.T) {
	f := startFront(t, Options{LoginTimeout: time.Second})
	tc := clientTLS.Clone()
	tc.NextProtos = []string{"h3"}
	tr := &webtransport.Transport{TLSClientConfig: tc,
		QUICConfig: &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true}}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, sess, err := tr.Dial(ctx, "https://"+f.addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a session without a stream is still open")
	}
	waitFor(t, "no pending connection", func() bool { return f.Pending() == 0 })
}
