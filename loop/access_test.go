package loop

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/accesstest"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// The access log's line for each way a relayed session ends, in both log
// formats, read back and checked field by field (docs/accesslog.md). The
// upgrade drain's code is reserved and has no case: nothing ends a
// session with it yet.
func TestAccessLogEndings(t *testing.T) {
	type env struct {
		t   *testing.T
		srv *Server
		fs  *xpratest.Server
		tc  *testClient
	}
	cases := []struct {
		name   string
		limits relay.Limits
		opts   Options
		hogs   int // more sessions that stream (the shed case)
		end    func(e env)
		code   string
		reason string
		text   string
	}{
		{name: "client gone", code: "CR", reason: "client-gone", text: "client connection lost",
			end: func(e env) { e.tc.Close() }},
		{name: "client disconnect", code: "CR", reason: "client-gone", text: "client disconnected: bye",
			end: func(e env) { e.tc.send(frame.Packet{"disconnect", "bye"}) }},
		{name: "server gone", code: "SR", reason: "server-gone", text: "server shutdown: server connection lost",
			end: func(e env) { e.fs.Close() }},
		{name: "too slow", limits: relay.Limits{StallTimeout: time.Second}, code: "PR", reason: "too-slow",
			text: "connection too slow: nothing read for 1s",
			end:  func(e env) { e.tc.send(frame.Packet{"stream", 400, 250_000}) }},
		{name: "idle", limits: relay.Limits{IdleTimeout: 300 * time.Millisecond}, code: "PR", reason: "idle-timeout",
			text: "idle timeout", end: func(env) {}},
		{name: "stopped", code: "LR", reason: "stopped", text: "server shutdown: proxy instance stopped by request",
			end: func(e env) {
				recs, _ := e.srv.Records()
				if len(recs) != 1 || !e.srv.StopSession(recs[0].ID) {
					e.t.Fatalf("cannot stop the session: %v", recs)
				}
			}},
		{name: "shutdown", code: "LR", reason: "shutdown", text: "server shutdown: proxy server stopped",
			end: func(e env) {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					e.srv.Shutdown(ctx, "proxy server stopped")
				}()
			}},
		{name: "shed", opts: Options{MaxBufferTotal: 256 << 10}, hogs: 4, code: "PR", reason: "shed",
			text: "connection too slow: proxy buffer budget exceeded", end: func(env) {}},
	}
	for _, format := range []string{"text", "json"} {
		for _, tc := range cases {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				fs := startFakeServer(t, "")
				log, logger := accesstest.New(format)
				opts := tc.opts
				opts.Log = logger
				addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"),
					Limits: tc.limits, Log: logger}, opts)
				c := dialProxy(t, addr)
				if p := c.login(t, "foo", "bar"); p.Type() != "hello" {
					t.Fatal(p)
				}
				c.send(frame.Packet{"ping", 1, 2, "x"})
				if p := c.recv(t); p.Type() != "ping_echo" {
					t.Fatalf("no echo: %v", p)
				}
				for range tc.hogs {
					hog := dialProxy(t, addr)
					if p := hog.login(t, "foo", "bar"); p.Type() != "hello" {
						t.Fatal(p)
					}
					hog.send(frame.Packet{"stream", 400, 250_000})
				}
				tc.end(env{t, srv, fs, c})
				deadline := time.Now().Add(30 * time.Second)
				var got accesstest.Line
				for got == nil {
					for _, r := range log.Wait(t, 1, time.Until(deadline)) {
						if r["reason"] == tc.reason {
							got = r
							break
						}
					}
					if got == nil {
						if time.Now().After(deadline) {
							t.Fatalf("no %s record in:\n%s", tc.reason, log.Bytes())
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
				t.Logf("access line: %v", got)
				checkRecord(t, got, map[string]string{"code": tc.code, "reason": tc.reason, "user": "foo",
					"transport": "tcp", "client_gen": "3.1", "server_gen": "3.1", "bridged": "false",
					"target": "tcp://" + fs.Addr() + "/", "level": "INFO"})
				if tc.text != "" && got["text"] != tc.text {
					t.Errorf("text %q, want %q", got["text"], tc.text)
				}
				if !strings.HasPrefix(got["client"], "127.0.0.1:") {
					t.Errorf("client %q", got["client"])
				}
				for _, k := range []string{"c2s_bytes", "c2s_packets", "s2c_bytes", "s2c_packets"} {
					if n, err := strconv.ParseInt(got[k], 10, 64); err != nil || n <= 0 {
						t.Errorf("%s = %q, want > 0 (the ping and its echo at least)", k, got[k])
					}
				}
				if d, err := strconv.ParseFloat(got["duration"], 64); err != nil || d <= 0 || d > 60 {
					t.Errorf("duration %q", got["duration"])
				}
				if st, err := time.Parse(time.RFC3339Nano, got["start"]); err != nil || time.Since(st) > time.Minute {
					t.Errorf("start %q: %v", got["start"], err)
				}
				// One line per session, however many events its end had.
				time.Sleep(200 * time.Millisecond)
				ids := map[string]int{}
				for _, r := range log.Wait(t, 1, time.Second) {
					ids[r["session"]]++
				}
				for id, n := range ids {
					if n != 1 {
						t.Errorf("session %s has %d access lines", id, n)
					}
				}
			})
		}
	}
}

// checkRecord asserts fields of an access line.
func checkRecord(t *testing.T, got accesstest.Line, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (line %v)", k, got[k], v, got)
		}
	}
}

// The access line of each way a login ends, and of a relayed session
// whose user and target have passwords: neither password reaches any line
// of the log, in either format.
func TestAccessLogLogins(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			fs := startFakeServer(t, "serverpw-s3cret")
			dead := testenv.FreePort()
			log, logger := accesstest.New(format)
			mods := multifile(t,
				"foo|userpw-s3cret|||tcp://"+fs.Addr()+"/",
				"withpw|userpw-s3cret|||tcp://u:serverpw-s3cret@"+fs.Addr()+"/",
				"gone|x|||tcp://127.0.0.1:"+strconv.Itoa(dead)+"/",
			)
			addr, _ := startProxy(t, relay.Config{Modules: mods, Log: logger,
				Limits: relay.Limits{LoginTimeout: 500 * time.Millisecond, ChallengeTimeout: time.Second}}, Options{Log: logger})
			n := 0
			next := func(t *testing.T) accesstest.Line {
				t.Helper()
				n++
				recs := log.Wait(t, n, 15*time.Second)
				return recs[n-1]
			}
			for _, tc := range []struct {
				name string
				do   func(t *testing.T)
				want map[string]string
			}{
				{"wrong password", func(t *testing.T) {
					expectDisconnect(t, dialProxy(t, addr).login(t, "foo", "nope"), "authentication failed")
				}, map[string]string{"code": "CA", "reason": "auth-failed", "user": "foo", "client_gen": "3.1", "target": ""}},
				{"unknown user", func(t *testing.T) {
					expectDisconnect(t, dialProxy(t, addr).login(t, "who", "x"), "authentication failed")
				}, map[string]string{"code": "CA", "reason": "auth-failed", "user": "who"}},
				{"dead target", func(t *testing.T) {
					expectDisconnect(t, dialProxy(t, addr).login(t, "gone", "x"), "failed to connect to display")
				}, map[string]string{"code": "ST", "reason": "unreachable", "user": "gone",
					"target": "tcp://127.0.0.1:" + strconv.Itoa(dead) + "/", "server_gen": ""}},
				{"silent client", func(t *testing.T) {
					tc := dialProxy(t, addr)
					tc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					io.ReadAll(tc.Conn)
				}, map[string]string{"code": "CH", "reason": "login-timeout", "user": "", "client_gen": "", "text": "login timeout"}},
				{"garbage", func(t *testing.T) {
					tc := dialProxy(t, addr)
					tc.Conn.Write([]byte("hello there\n"))
					tc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					io.ReadAll(tc.Conn)
				}, map[string]string{"code": "CH", "reason": "client-error"}},
				{"version request", func(t *testing.T) {
					tc := dialProxy(t, addr)
					tc.send(frame.Packet{"hello", frame.NewDict("version", "3.1.3", "version_request", true)})
					tc.recv(t)
				}, map[string]string{"code": "CH", "reason": "request", "text": "version request"}},
				{"target with a password", func(t *testing.T) {
					c := dialProxy(t, addr)
					if p := c.login(t, "withpw", "userpw-s3cret"); p.Type() != "hello" {
						t.Fatalf("got %v", p)
					}
					c.send(frame.Packet{"ping", 1, 2, "x"})
					c.recv(t)
					c.Close()
				}, map[string]string{"code": "CR", "reason": "client-gone", "user": "withpw",
					"target": "tcp://u@" + fs.Addr() + "/"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					tc.do(t)
					got := next(t)
					t.Logf("access line: %v", got)
					checkRecord(t, got, tc.want)
					if got["transport"] != "tcp" || !strings.HasPrefix(got["client"], "127.0.0.1:") {
						t.Errorf("transport %q client %q", got["transport"], got["client"])
					}
				})
			}
			// No password anywhere in the log, in any line, access or not.
			for _, secret := range []string{"userpw-s3cret", "serverpw-s3cret"} {
				if strings.Contains(string(log.Bytes()), secret) {
					t.Errorf("%s in the log:\n%s", secret, log.Bytes())
				}
			}
		})
	}
}

// The access line names each transport of the proxy's port, and unix
// sockets.
func TestAccessLogTransports(t *testing.T) {
	fs := startFakeServer(t, "")
	tlsCfg, err := selfsigned.Config()
	if err != nil {
		t.Fatal(err)
	}
	log, logger := accesstest.New("text")
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: logger,
		Limits: relay.Limits{LoginTimeout: 5 * time.Second, ChallengeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, MaxPacketSize: 1 << 20}}
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort())
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	srv := New([]Listener{{Network: "tcp", Address: addr, Kind: "tcp", Config: &cfg, TLS: tlsCfg},
		{Network: "unix", Address: sock, Config: &cfg}}, Options{Log: logger})
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	<-srv.Ready()
	t.Cleanup(func() { srv.Stop(context.Background()); <-errc })
	dial := func(network, a string) net.Conn {
		c, err := net.Dial(network, a)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tlsDial := func() net.Conn {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	raw := func(c net.Conn) *testClient {
		t.Cleanup(func() { c.Close() })
		tc := newTestClient(c, nil)
		tc.Writer = frame.Writer{Encoding: frame.Rencode}
		return tc
	}
	n := 0
	for _, tc := range []struct {
		transport string
		dial      func() *testClient
	}{
		{"tcp", func() *testClient { return dialProxy(t, addr) }},
		{"unix", func() *testClient { return raw(dial("unix", sock)) }},
		{"ws", func() *testClient { return dialWS(t, dial("tcp", addr), true) }},
		{"ssl", func() *testClient { return raw(tlsDial()) }},
		{"wss", func() *testClient { return dialWS(t, tlsDial(), true) }},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			c := tc.dial()
			if p := c.login(t, "foo", "bar"); p.Type() != "hello" {
				t.Fatalf("login: %s", p)
			}
			c.send(frame.Packet{"ping", 7, 0, "x"})
			if p := c.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("ping: %s", p)
			}
			c.Close()
			n++
			got := log.Wait(t, n, 10*time.Second)[n-1]
			checkRecord(t, got, map[string]string{"transport": tc.transport, "code": "CR", "user": "foo"})
		})
	}
}

// A bridged session's line names both generations and says so.
func TestAccessLogBridged(t *testing.T) {
	for _, c := range []struct {
		name              string
		only              frame.Encoding
		client            int
		clientGen, server string
	}{{"3.1 client, 6.x server", frame.RencodePlus, client31, "3.1", "6.x"},
		{"6.x client, 3.1 server", frame.Rencode, client6, "6.x", "3.1"}} {
		t.Run(c.name, func(t *testing.T) {
			fs := xpratest.NewServer(t, xpratest.ServerOptions{Only: c.only})
			log, logger := accesstest.New("json")
			addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: logger,
				Generations: &relay.Generations{}}, Options{Log: logger})
			tc := bridgedClient(t, addr, c.client)
			tc.send(frame.Packet{"ping", 1, 2, "x"})
			if p := tc.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("no echo: %v", p)
			}
			fs.Close()
			got := log.Wait(t, 1, 10*time.Second)[0]
			checkRecord(t, got, map[string]string{"bridged": "true", "client_gen": c.clientGen, "server_gen": c.server,
				"code": "SR", "reason": "server-gone", "user": "foo"})
		})
	}
}

// A packet that decodes but does not translate between the generations
// (a type that is no text, which 6.x cannot name) ends the session as a
// bridge error; bytes that do not decode are the client's error.
func TestAccessLogBridgeError(t *testing.T) {
	for _, c := range []struct {
		name    string
		payload []any
		reason  string
	}{
		{"type not text", []any{[]byte{0xff, 0x00}, int64(1)}, "bridge-error"},
		{"alias number", []any{int64(7), int64(1)}, "bridge-error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := xpratest.NewServer(t, xpratest.ServerOptions{Only: frame.RencodePlus})
			log, logger := accesstest.New("text")
			addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: logger,
				Generations: &relay.Generations{}}, Options{Log: logger})
			tc := bridgedClient(t, addr, client31)
			b, err := frame.Rencode.Append(nil, c.payload)
			if err != nil {
				t.Fatal(err)
			}
			tc.Conn.Write(append(frame.Header{Flags: frame.FlagRencode, Size: uint32(len(b))}.Append(nil), b...))
			got := log.Wait(t, 1, 10*time.Second)[0]
			t.Logf("access line: %v", got)
			checkRecord(t, got, map[string]string{"reason": c.reason, "code": "PR", "bridged": "true"})
		})
	}
}

// A connection evicted under the pre-login cap has its line: the proxy
// ended it before its hello.
func TestAccessLogEvicted(t *testing.T) {
	fs := startFakeServer(t, "")
	log, logger := accesstest.New("json")
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: logger},
		Options{Log: logger, MaxLoginConnections: 1})
	first := dialProxy(t, addr)
	time.Sleep(200 * time.Millisecond) // accepted, waiting for its hello
	second := dialProxy(t, addr)
	first.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(first.Conn)
	got := log.Wait(t, 1, 10*time.Second)[0]
	checkRecord(t, got, map[string]string{"reason": "evicted", "code": "PH", "user": "", "level": "INFO"})
	if p := second.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("the newer connection: %v", p)
	}
}
