package quicfront

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xpraproxy/xpraproxy/loop"
)

// FuzzServeHTTP feeds the HTTP/3 handler what a client controls after
// quic-go parsed a request (method, :protocol, :path, the WebSocket
// headers): no panic, a CONNECT is accepted only as xpra's WebSocket, a
// GET serves nothing but the files under the HTML directory.
func FuzzServeHTTP(f *testing.F) {
	f.Add("CONNECT", "websocket", "/", "13", "xpra")
	f.Add("CONNECT", "webtransport", "/", "", "")
	f.Add("CONNECT", "websocket", "/100", "8", "binary, xpra")
	f.Add("GET", "", "/index.html", "", "")
	f.Add("GET", "", "/../secret", "", "")
	f.Add("HEAD", "", "//./index.html", "", "")
	dir := f.TempDir()
	html := filepath.Join(dir, "www")
	os.Mkdir(html, 0o755)
	os.WriteFile(filepath.Join(html, "index.html"), []byte("index"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("secret"), 0o644)
	s := &Server{opts: Options{HTML: html, Streams: loop.New(nil, loop.Options{})},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, method, proto, path, version, sub string) {
		req := &http.Request{Method: method, Proto: proto, URL: &url.URL{Path: path},
			Header: http.Header{"Sec-Websocket-Version": {version}, "Sec-Websocket-Protocol": {sub}}}
		rec := httptest.NewRecorder()
		s.serveHTTP(rec, req)
		body := rec.Body.String()
		if strings.Contains(body, "secret") {
			t.Fatalf("%s %q served a file outside the directory", method, path)
		}
		if method == http.MethodConnect {
			refusal, _ := checkConnect(req)
			xpra := false
			for _, p := range strings.Split(sub, ",") {
				xpra = xpra || strings.TrimSpace(p) == "xpra"
			}
			want := proto == "websocket" && xpra && (version == "" || version == "13")
			if (refusal == "") != want {
				t.Fatalf("CONNECT %q version %q sub %q: refusal %q", proto, version, sub, refusal)
			}
			// No connection state here: even an acceptable CONNECT
			// gets no session.
			if rec.Code == http.StatusOK {
				t.Fatalf("CONNECT without a connection answered 200")
			}
		}
	})
}
