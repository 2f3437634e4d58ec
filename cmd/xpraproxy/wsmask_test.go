package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

// maskSwitch is a WebSocket client's byte stream whose frames are masked
// until masked is set false: a browser that breaks RFC 6455 after its
// login, or one of xpra's python clients (never masked).
type maskSwitch struct {
	net.Conn
	masked  bool
	pending []byte
}

func (m *maskSwitch) Read(p []byte) (int, error) {
	for len(m.pending) == 0 {
		data, op, err := wsutil.ReadServerData(m.Conn)
		if err != nil {
			return 0, err
		}
		if op == ws.OpBinary || op == ws.OpText {
			m.pending = data
		}
	}
	n := copy(p, m.pending)
	m.pending = m.pending[n:]
	return n, nil
}

func (m *maskSwitch) Write(p []byte) (int, error) {
	write := wsutil.WriteServerBinary // unmasked, as a server writes
	if m.masked {
		write = wsutil.WriteClientBinary
	}
	if err := write(m.Conn, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func dialMaskSwitch(t *testing.T, addr string, overTLS, origin, masked bool) (*xpratest.Client, *maskSwitch) {
	t.Helper()
	scheme := "ws"
	d := ws.Dialer{Timeout: 5 * time.Second, Protocols: []string{"binary"}}
	if overTLS {
		scheme, d.TLSConfig = "wss", &tls.Config{InsecureSkipVerify: true}
	}
	if origin {
		d.Header = ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://" + addr}})
	}
	conn, br, _, err := d.Dial(context.Background(), scheme+"://"+addr+"/")
	if err != nil {
		t.Fatalf("%s upgrade: %v", scheme, err)
	}
	if br != nil {
		ws.PutReader(br)
	}
	t.Cleanup(func() { conn.Close() })
	m := &maskSwitch{Conn: conn, masked: masked}
	return xpratest.NewClient(m, nil), m
}

// The WebSocket masking rule holds the same with and without root (where
// the worker relays and must apply what the main process decided at the
// upgrade), with a real xpra server behind the proxy: a browser-style
// client (Origin) that masks while logging in and then sends an unmasked
// frame is closed with a reason, over ws and wss; one of xpra's python
// clients (no Origin, unmasked) is relayed; --websocket-require-mask=yes
// closes a client without an Origin that stops masking.
func TestWebSocketMaskingBothModes(t *testing.T) {
	a := gen31.srv(t, "sessionA")
	cert, key := writeCert(t)
	db := sqliteDB(t, []string{"foo", "bar", "nobody", "nogroup", target(a)})
	for _, root := range []bool{false, true} {
		t.Run(fmt.Sprintf("root=%v", root), func(t *testing.T) {
			if root {
				testenv.NeedRoot(t)
			}
			cases := []struct {
				name                    string
				requireMask             bool
				overTLS, origin, masked bool // how it logs in
				closed                  bool // once it stops masking
			}{
				{"browser ws", false, false, true, true, true},
				{"browser wss", false, true, true, true, true},
				{"python client ws", false, false, false, false, false},
				{"require-mask ws", true, false, false, true, true},
			}
			proxies := map[bool]*proxy{}
			for _, require := range []bool{false, true} {
				proxies[require] = startProxyAs(t, root, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db, "--ssl-cert="+cert, "--ssl-key="+key,
					"--websocket-require-mask="+map[bool]string{true: "yes", false: "no"}[require])
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					p := proxies[tc.requireMask]
					c, m := dialMaskSwitch(t, fmt.Sprintf("127.0.0.1:%d", p.port), tc.overTLS, tc.origin, tc.masked)
					if pk, err := c.Login("foo", "bar", xpratest.Hello("foo")); err != nil || pk.Type() != "hello" {
						t.Fatalf("login: %v %v", pk, err)
					}
					m.masked = false
					c.Send(frame.Packet{"ping", 12345, 0, "x"})
					var got frame.Packet
					for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
						pk, err := c.Recv(10 * time.Second)
						if err != nil || pk.Type() == "disconnect" || pk.Type() == "ping_echo" {
							got = pk
							break
						}
					}
					switch {
					case tc.closed && (got.Type() != "disconnect" || !strings.Contains(packetWords(got), "unmasked")):
						t.Errorf("an unmasked frame after login: got %v, want a disconnect naming it", got)
					case !tc.closed && got.Type() != "ping_echo":
						t.Errorf("an unmasked python client's ping: got %v, want the server's echo", got)
					}
				})
			}
			if root {
				for _, p := range proxies {
					if !strings.Contains(p.logText(), "connection handed to worker") {
						t.Errorf("no handoff in the root proxy's log")
					}
				}
			}
		})
	}
}

// packetWords is a packet's text arguments joined, for matching reasons.
func packetWords(p frame.Packet) string {
	var words []string
	for _, v := range p {
		if s, ok := frame.AsText(v); ok {
			words = append(words, s)
		}
	}
	return strings.Join(words, " ")
}
