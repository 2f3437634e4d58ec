package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zlib"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

// attackCase is one attack of the suite; run returns its outcome in
// words for the report, and fails the test through s.t when the proxy
// did not answer it as it should.
type attackCase struct {
	name    string
	boundMB int64 // stated bound on the proxy's RSS growth
	run     func(s *siege) string
}

// rawFrame is an xpra frame with any header.
func rawFrame(h frame.Header, payload []byte) []byte {
	h.Size = uint32(len(payload))
	return append(h.Append(nil), payload...)
}

func zlibOf(n int) []byte {
	var b bytes.Buffer
	w, _ := zlib.NewWriterLevel(&b, zlib.BestCompression)
	w.Write(make([]byte, n))
	w.Close()
	return b.Bytes()
}

// sendAndRead writes b to each connection at once and reads the answers.
func (s *siege) sendAndRead(n int, b []byte, sources func() string) []string {
	conns := s.rawDial(n, sources)
	defer hold(conns)()
	return parallel(conns, func(c net.Conn) string {
		c.Write(b)
		out, _ := readAll(c, 10*time.Second)
		return out
	})
}

// expectAll checks that every answer contains want.
func (s *siege) expectAll(name string, answers []string, want string) string {
	s.t.Helper()
	bad := 0
	for _, a := range answers {
		if !strings.Contains(a, want) {
			bad++
			if bad == 1 {
				s.failf("%s: answer %q lacks %q", name, truncate(a, 200), want)
			}
		}
	}
	return fmt.Sprintf("%d connections, %d answered %q and closed", len(answers), len(answers)-bad, want)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// tenAddresses spreads connections over ten fresh addresses.
func (s *siege) tenAddresses() func() string {
	var srcs []string
	for range 10 {
		srcs = append(srcs, s.source())
	}
	i := 0
	return func() string { i++; return srcs[i%len(srcs)] }
}

var attackCases = []attackCase{
	{"garbage", 64, func(s *siege) string {
		junk := make([]byte, 64<<10)
		rand.Read(junk)
		junk[0] = 'P' // past the sniffing, into the xpra parser
		return s.expectAll("garbage", s.sendAndRead(100, junk, s.tenAddresses()), "disconnect")
	}},
	{"4 GiB header", 16, func(s *siege) string {
		h := frame.Header{Flags: frame.FlagRencode, Size: 0xFFFFFFFF}.Append(nil)
		return s.expectAll("4GiB", s.sendAndRead(100, append(h, "xxxx"...), s.tenAddresses()), "disconnect")
	}},
	{"lz4 bomb hello", 64, func(s *siege) string {
		_, bomb, _ := frame.Compress(frame.AlgoLZ4|1, make([]byte, 64<<20))
		f := rawFrame(frame.Header{Flags: frame.FlagRencode, Compression: frame.AlgoLZ4 | 1}, bomb)
		return s.expectAll("lz4", s.sendAndRead(40, f, s.tenAddresses()), "disconnect")
	}},
	{"zlib bomb hello", 64, func(s *siege) string {
		f := rawFrame(frame.Header{Flags: frame.FlagRencode, Compression: frame.AlgoZlib | 9}, zlibOf(64<<20))
		return s.expectAll("zlib", s.sendAndRead(40, f, s.tenAddresses()), "disconnect")
	}},
	{"zlib raw-chunk bombs", 64, func(s *siege) string {
		// The case: chunks 1..3 of 16 MiB of zeros each, ~16 KB
		// on the wire, which a proxy that inflates and keeps them pays
		// 48 MiB per connection for.
		chunk := zlibOf(16 << 20)
		var b []byte
		for i := uint8(1); i <= 3; i++ {
			b = append(b, rawFrame(frame.Header{Compression: frame.AlgoZlib | 9, Index: i}, chunk)...)
		}
		return s.expectAll("chunks", s.sendAndRead(40, b, s.tenAddresses()), "disconnect")
	}},
	{"nesting bomb", 32, func(s *siege) string {
		// rencode: 0x3b opens a list; 200,000 of them.
		payload := bytes.Repeat([]byte{0x3b}, 200_000)
		f := rawFrame(frame.Header{Flags: frame.FlagRencode}, payload)
		return s.expectAll("nesting", s.sendAndRead(40, f, s.tenAddresses()), "disconnect")
	}},
	{"wide hello", 64, func(s *siege) string {
		// The widest hello the pre-login bound lets through: a list of
		// 250,000 small integers (one byte each) instead of a dict.
		payload := []byte{0x3b}
		payload = append(payload, bytes.Repeat([]byte{0x01}, 250_000)...)
		payload = append(payload, 0x7f)
		f := rawFrame(frame.Header{Flags: frame.FlagRencode}, payload)
		return s.expectAll("wide", s.sendAndRead(40, f, s.tenAddresses()), "disconnect")
	}},
	{"oversized hello", 16, func(s *siege) string {
		// Over --max-login-packet-size (256 KiB) before login.
		f := rawFrame(frame.Header{Flags: frame.FlagRencode}, make([]byte, 1<<20))
		return s.expectAll("oversized", s.sendAndRead(20, f[:frame.HeaderSize+4096], s.tenAddresses()), "disconnect")
	}},
	{"slowloris hello", 32, func(s *siege) string {
		conns := s.rawDial(40, s.tenAddresses())
		defer hold(conns)()
		start := time.Now()
		hello, _ := (&frame.Writer{Encoding: frame.Rencode}).AppendPacket(nil, frame.Packet{"hello", xpratest.Hello("x")})
		answers := parallel(conns, func(c net.Conn) string {
			for i := 0; i < len(hello)-1; i++ {
				if _, err := c.Write(hello[i : i+1]); err != nil {
					break
				}
				time.Sleep(500 * time.Millisecond)
				if time.Since(start) > 15*time.Second {
					break
				}
			}
			out, _ := readAll(c, 10*time.Second)
			return out
		})
		if d := time.Since(start); d > 12*time.Second {
			s.failf("slowloris: connections held for %v (login timeout 5 s)", d)
		}
		return s.expectAll("slowloris", answers, "login timeout") + fmt.Sprintf(" within %v", time.Since(start).Round(time.Second))
	}},
	{"silent clients", 32, func(s *siege) string {
		// 100 silent connections from one address: 16 are held until the
		// login timeout, the rest refused at once; a correct login from
		// elsewhere works meanwhile.
		src := s.source()
		conns := s.rawDial(100, func() string { return src })
		defer hold(conns)()
		refused := 0
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			b := make([]byte, 200)
			n, _ := c.Read(b)
			if strings.Contains(string(b[:n]), "too many connections waiting to log in from your address") {
				refused++
			}
		}
		s.correctLogin("during silent clients")
		if refused != 100-16 {
			s.failf("silent clients: %d of 100 refused, want 84 (16 per address)", refused)
		}
		return fmt.Sprintf("100 from one address: %d refused at once, 16 held until the login timeout", refused)
	}},
	{"pre-login cap", 32, func(s *siege) string {
		// 10 addresses × 16 in one /24: more than the 120 the proxy lets
		// log in at once (RLIMIT_NOFILE 1024); each beyond takes the
		// place of the longest waiting, which is told why.
		srcs := s.tenAddresses()
		conns := s.rawDial(160, srcs)
		defer hold(conns)()
		refused := 0
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			b := make([]byte, 200)
			n, _ := c.Read(b)
			if strings.Contains(string(b[:n]), "too many connections waiting to log in") {
				refused++
			}
		}
		if refused < 160-120 {
			s.failf("pre-login cap: only %d of 160 evicted", refused)
		}
		return fmt.Sprintf("160 silent from 10 addresses: %d evicted with a reason (cap 120)", refused)
	}},
	{"crowd of 100 addresses", 32, crowdCase},
	{"1000 abandoned connections", 32, func(s *siege) string {
		for range 40 {
			src := s.source()
			conns := s.rawDial(25, func() string { return src })
			hold(conns)()
		}
		return "1000 connections opened and closed from 40 addresses"
	}},
	{"TLS half-open handshakes", 32, func(s *siege) string {
		conns := s.rawDial(40, s.tenAddresses())
		defer hold(conns)()
		start := time.Now()
		// The first bytes of a ClientHello, then silence.
		partial := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
		parallel(conns, func(c net.Conn) string {
			c.Write(partial)
			out, _ := readAll(c, 15*time.Second)
			return out
		})
		d := time.Since(start)
		if d > 12*time.Second {
			s.failf("half-open TLS handshakes held for %v", d)
		}
		return fmt.Sprintf("40 half-open handshakes closed after %v", d.Round(time.Second))
	}},
	{"TLS client works", 16, func(s *siege) string {
		c, err := tls.Dial("tcp", s.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			s.failf("TLS: %v", err)
			return "TLS dial failed"
		}
		c.Close()
		return "a TLS handshake completes"
	}},
	{"HTTP pipelining", 64, func(s *siege) string {
		// The case: keep-alive requests for an 876 KB file,
		// never reading the answers.
		req := []byte("GET /js/lib/forge.js HTTP/1.1\r\nHost: x\r\n\r\n")
		conns := s.rawDial(10, s.tenAddresses())
		defer hold(conns)()
		parallel(conns, func(c net.Conn) string {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			for i := 0; i < 2000; i++ {
				if _, err := c.Write(req); err != nil {
					break
				}
			}
			return ""
		})
		time.Sleep(time.Second)
		return "10 connections × 2000 pipelined GETs (82 KB each) without reading"
	}},
	{"HTML5 client files", 16, func(s *siege) string {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			s.t.Error(err)
			return "dial failed"
		}
		defer c.Close()
		c.Write([]byte("GET /js/lib/forge.js HTTP/1.1\r\nHost: x\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
		out, _ := readAll(c, 10*time.Second)
		want, _ := os.ReadFile(filepath.Join(defaultHTMLDir, "js/lib/forge.js"))
		if !strings.Contains(out, string(want[len(want)-200:])) || strings.Count(out, "HTTP/1.1 200 OK") != 2 {
			s.failf("pipelined GETs read properly were not both answered whole (%d bytes)", len(out))
		}
		return "two pipelined GETs answered in order, whole"
	}},
	{"stream while connecting", 64, func(s *siege) string {
		// A logged-in user whose backend never answers streams data.
		c, err := xpratest.Dial(s.addr, s.source())
		if err != nil {
			s.t.Error(err)
			return "dial failed"
		}
		defer c.Close()
		h := xpratest.Hello("slow")
		done := make(chan frame.Packet, 1)
		go func() { p, _ := c.Login("slow", "spw", h); done <- p }()
		time.Sleep(500 * time.Millisecond)
		junk := make([]byte, 1<<20)
		sent := 0
		c.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for sent < 1000<<20 {
			n, err := c.Conn.Write(junk)
			sent += n
			if err != nil {
				break
			}
		}
		p := <-done
		// The proxy reads and drops what comes after the disconnect
		// (gnet cannot stop reading), so the sender is not throttled;
		// what matters is that nothing is kept (the RSS bound).
		if len(p) == 0 || p.Type() != "disconnect" || !strings.Contains(words(p), "sent before the session started") {
			s.failf("stream while connecting: %v", truncate(words(p), 200))
			return fmt.Sprintf("%d MiB sent", sent>>20)
		}
		return fmt.Sprintf("%d MiB sent; disconnected after 1 MiB with %q, nothing kept", sent>>20, truncate(words(p[1:]), 80))
	}},
	{"dead backend logins", 32, func(s *siege) string {
		// 60 logins to a backend that never answers; another user's
		// login stays fast.
		var clients []*xpratest.Client
		srcs := s.tenAddresses()
		for range 60 {
			c, err := xpratest.Dial(s.addr, srcs())
			if err != nil {
				continue
			}
			clients = append(clients, c)
			go c.Login("slow", "spw", nil)
		}
		time.Sleep(time.Second)
		s.correctLogin("during dead backend logins")
		for _, c := range clients {
			c.Close()
		}
		return "60 logins to a silent backend; a correct login to another server stayed fast"
	}},
	{"backend killed mid-stream", 16, func(s *siege) string {
		c := s.relaying("victim", "vpw")
		if c == nil {
			return "login failed"
		}
		defer c.Close()
		c.Ping(5 * time.Second)
		s.victim.Close()
		p, _ := c.Recv(5 * time.Second)
		if p.Type() != "disconnect" || !strings.Contains(words(p), "server connection lost") {
			s.failf("backend killed: client got %v", p)
		}
		return fmt.Sprintf("client told %v", truncate(words(p), 80))
	}},
	{"client RST", 16, func(s *siege) string {
		for range 50 {
			c, p, err := s.login("good", "goodpw")
			if err != nil || p.Type() != "hello" {
				continue
			}
			c.Conn.(*net.TCPConn).SetLinger(0)
			c.Send(frame.Packet{"ping", 1, 0, "x"})
			c.Close()
		}
		return "50 relaying clients reset their connections"
	}},
	{"brute force", 16, func(s *siege) string {
		src := s.source()
		throttled := 0
		start := time.Now()
		for range 60 {
			c, err := xpratest.Dial(s.addr, src)
			if err != nil {
				continue
			}
			p, _ := c.Login("good", "wrong", nil)
			if strings.Contains(words(p), "too many failed logins") {
				throttled++
			}
			c.Close()
		}
		s.correctLogin("during brute force (from another address)")
		c, _ := xpratest.Dial(s.addr, src)
		p, _ := c.Login("good", "goodpw", nil)
		c.Close()
		if !strings.Contains(words(p), "too many failed logins") {
			s.failf("brute force: the attacking address is not locked out: %v", p)
		}
		if throttled < 50 {
			s.failf("brute force: %d of 60 attempts throttled", throttled)
		}
		return fmt.Sprintf("60 wrong passwords in %v: %d refused unchecked; other addresses unaffected",
			time.Since(start).Round(time.Millisecond), throttled)
	}},
	{"long username", 16, func(s *siege) string {
		c, err := xpratest.Dial(s.addr, s.source())
		if err != nil {
			return "dial failed"
		}
		defer c.Close()
		p, _ := c.Login(strings.Repeat("u", 200<<10), "x", nil)
		if !strings.Contains(words(p), "invalid username") {
			s.failf("200 KB username: %v", truncate(words(p), 200))
		}
		return "200 KB username refused; no log line over 2 KB"
	}},
	{"backend credentials", 16, func(s *siege) string {
		c := s.relaying("cred", "cpw")
		if c == nil {
			return "login failed"
		}
		defer c.Close()
		c.Send(frame.Packet{"info-request", []any{}, []any{}, []any{}})
		for {
			p, err := c.Recv(5 * time.Second)
			if err != nil {
				s.failf("no info-response: %v", err)
				return "no info-response"
			}
			if p.Type() == "info-response" {
				text := words(p)
				if strings.Contains(text, "SECRETPW") || !strings.Contains(text, "backuser:***@") {
					s.failf("info-response: %s", truncate(text, 400))
				}
				break
			}
		}
		// A remote info request sees its own connection, not the
		// proxy's process.
		ic, _ := xpratest.Dial(s.addr, s.source())
		defer ic.Close()
		h := xpratest.Hello("good")
		h.Set("request", "info")
		p, _ := ic.Login("good", "goodpw", h)
		if len(p) < 2 {
			s.failf("remote info: %v", words(p))
		} else if d, ok := p[1].(frame.Dict); !ok || d.Has("pid") || d.Has("proxy-server") {
			s.failf("remote info shows the proxy's figures: %v", p)
		}
		return "password replaced by *** in info-response; remote info without pid or proxy figures"
	}},
	{"start-new-session", 16, func(s *siege) string {
		mark := filepath.Join(env.dir, "pwned")
		h := xpratest.Hello("good")
		h.Set("start-new-session", frame.NewDict("mode", "start", "start", "touch "+mark))
		c, _ := xpratest.Dial(s.addr, s.source())
		defer c.Close()
		p, _ := c.Login("good", "goodpw", h)
		time.Sleep(time.Second)
		if _, err := os.Stat(mark); err == nil {
			s.t.Error("a client's command ran as the proxy's account")
		}
		if !strings.Contains(words(p), "disabled") {
			s.failf("start-new-session: %v", p)
		}
		return fmt.Sprintf("refused: %s", truncate(words(p), 90))
	}},
	// adversarial_flood_test.go
	{"slow readers vs flooding servers", floodBudgetMB, floodCase(false)},
	{"bridged slow readers vs floods", floodBudgetMB, floodCase(true)},
	{"aes garbage and wrong keys", 32, aesCase},
}

// words is a packet's text, nested values included, for assertions.
func words(v any) string {
	switch x := v.(type) {
	case frame.Packet:
		return words([]any(x))
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = words(e)
		}
		return "[" + strings.Join(parts, " ") + "]"
	case frame.Dict:
		parts := make([]string, len(x))
		for i, kv := range x {
			parts[i] = words(kv.Key) + "=" + words(kv.Value)
		}
		return "{" + strings.Join(parts, " ") + "}"
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

// relaying logs user in and returns the client once the server's hello
// came, or records the failure and returns nil.
func (s *siege) relaying(user, password string) *xpratest.Client {
	c, p, err := s.login(user, password)
	if err != nil || p.Type() != "hello" {
		s.failf("%s login: %v %v", user, err, words(p))
		if c != nil {
			c.Close()
		}
		return nil
	}
	return c
}

// crowdCase: 100 addresses in 25 /24s, two connections each holding half
// a hello and reconnecting when evicted or timed out (200, more than the
// 120 the proxy lets log in at once) for 8 s. A correct login from a
// fresh address gets in within a second throughout (docs/frontdoor.md:
// the crowd's largest blocks make way).
func crowdCase(s *siege) string {
	half := append(frame.Header{Flags: frame.FlagRencode, Size: 1000}.Append(nil), make([]byte, 100)...)
	var (
		stop                       = make(chan struct{})
		wg                         sync.WaitGroup
		mu                         sync.Mutex
		open                       = map[net.Conn]bool{}
		evicted, timedOut, strange atomic.Int64
		firstStrange               atomic.Value
	)
	for i := range 200 {
		a := i / 2
		src := fmt.Sprintf("127.1.%d.%d", a%25, 1+a/25)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := d.Dial("tcp", s.addr)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				mu.Lock()
				open[c] = true
				mu.Unlock()
				c.Write(half)
				out, _ := readAll(c, 15*time.Second)
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				c.Close()
				select {
				case <-stop:
					return
				default:
				}
				switch {
				case strings.Contains(out, "made way for a newer connection"):
					evicted.Add(1)
				case strings.Contains(out, "login timeout"):
					timedOut.Add(1)
				default:
					strange.Add(1)
					firstStrange.CompareAndSwap(nil, out)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Second) // the crowd fills the cap
	logins, slowest := 0, time.Duration(0)
	for start := time.Now(); time.Since(start) < 8*time.Second; time.Sleep(300 * time.Millisecond) {
		t0 := time.Now()
		c, p, err := s.login("good", "goodpw")
		d := time.Since(t0)
		slowest = max(slowest, d)
		if err != nil || p.Type() != "hello" || d > time.Second {
			s.failf("crowd: a correct login from a fresh address: %v %v after %v", err, words(p), d)
		}
		if c != nil {
			c.Close()
		}
		logins++
	}
	close(stop)
	mu.Lock()
	for c := range open {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	if evicted.Load() == 0 {
		s.failf("crowd: no connection was evicted (the cap never filled?)")
	}
	if n := strange.Load(); n > 0 {
		s.failf("crowd: %d connections read neither an eviction nor a login timeout, such as %q", n, truncate(fmt.Sprint(firstStrange.Load()), 200))
	}
	return fmt.Sprintf("200 half-hellos from 100 addresses in 25 /24s for 8 s: %d evicted, %d timed out; %d correct logins from fresh addresses, slowest %v",
		evicted.Load(), timedOut.Load(), logins, slowest.Round(time.Millisecond))
}
