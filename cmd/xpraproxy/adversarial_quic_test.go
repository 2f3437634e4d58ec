package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

// The hostile-UDP cases of the suite, against --bind-quic on the proxy's
// port number (docs/quic.md). xpra 3.1.3's proxy has no QUIC: its report
// says so.

var quicTLS = &tls.Config{InsecureSkipVerify: true} // the suite's self-signed certificate

// udpCount counts bytes each way on the attackers' sockets: what the
// proxy received from them and what it sent back.
type udpCount struct {
	in, out, retries atomic.Int64 // to the proxy; from it; Retry packets from it
}

func (u *udpCount) ratio() float64 {
	if u.in.Load() == 0 {
		return 0
	}
	return float64(u.out.Load()) / float64(u.in.Load())
}

// spoofedConn is a spoofed source address: it sends what quic-go writes
// and delivers nothing back (the real owner of a spoofed address would
// never answer), counting what the proxy sent there. It is no
// *net.UDPConn, so quic-go reads only through ReadFrom.
type spoofedConn struct {
	c *net.UDPConn
	n *udpCount
}

func (s spoofedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, _, err := s.c.ReadFrom(b)
		if err != nil {
			return 0, nil, err
		}
		s.n.out.Add(int64(n))
		if n > 0 && b[0]&0xf0 == 0xf0 { // long header, type Retry (RFC 9000 17.2.5)
			s.n.retries.Add(1)
		}
	}
}

func (s spoofedConn) WriteTo(b []byte, a net.Addr) (int, error) {
	s.n.in.Add(int64(len(b)))
	return s.c.WriteTo(b, a)
}
func (s spoofedConn) Close() error                       { return s.c.Close() }
func (s spoofedConn) LocalAddr() net.Addr                { return s.c.LocalAddr() }
func (s spoofedConn) SetDeadline(t time.Time) error      { return s.c.SetDeadline(t) }
func (s spoofedConn) SetReadDeadline(t time.Time) error  { return s.c.SetReadDeadline(t) }
func (s spoofedConn) SetWriteDeadline(t time.Time) error { return s.c.SetWriteDeadline(t) }

// udpFrom is a UDP socket on the loopback address src.
func udpFrom(src string) (*net.UDPConn, error) {
	return net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
}

// quicLogin asserts that a quic:// client logs in and echoes a ping.
func (s *siege) quicLogin(when string) {
	s.t.Helper()
	uc, err := udpFrom(s.source())
	if err != nil {
		s.t.Fatal(err)
	}
	tr := &quic.Transport{Conn: uc}
	defer tr.Close()
	q, err := xpratest.DialQUICConnOn(tr, s.addr, quicTLS)
	if err != nil {
		s.failf("%s: quic connection: %v", when, err)
		return
	}
	c, err := q.XpraClient()
	if err != nil {
		s.failf("%s: quic CONNECT: %v", when, err)
		return
	}
	defer c.Close()
	if p, err := c.Login("good", "goodpw", xpratest.Hello6("good")); err != nil || p.Type() != "hello" {
		s.failf("%s: quic login: %v %v", when, err, words(p))
		return
	}
	if err := c.Ping(5 * time.Second); err != nil {
		s.failf("%s: quic session does not echo: %v", when, err)
	}
}

// quicConns opens n QUIC connections (handshake done, nothing more)
// spread over sources sockets of fresh addresses; it returns those the
// proxy admitted and the transports to close.
func (s *siege) quicConns(n, sources int) ([]*xpratest.QUICConn, func()) {
	var trs []*quic.Transport
	for range sources {
		uc, err := udpFrom(s.source())
		if err != nil {
			s.t.Fatal(err)
		}
		trs = append(trs, &quic.Transport{Conn: uc})
	}
	var mu sync.Mutex
	var out []*xpratest.QUICConn
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if q, err := xpratest.DialQUICConnOn(trs[i%len(trs)], s.addr, quicTLS); err == nil {
				mu.Lock()
				out = append(out, q)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, func() {
		for _, tr := range trs {
			tr.Close()
		}
	}
}

// closedWithin counts the connections the proxy closed within d.
func closedWithin(qs []*xpratest.QUICConn, d time.Duration) int {
	deadline := time.After(d)
	closed := 0
	for _, q := range qs {
		select {
		case <-q.Conn.Context().Done():
			closed++
		case <-deadline:
			return closed
		}
	}
	return closed
}

var quicAttackCases = []attackCase{
	{"QUIC garbage datagrams", 16, func(s *siege) string {
		if !s.quic {
			return "no QUIC listener"
		}
		var n udpCount
		var wg sync.WaitGroup
		for range 20 {
			uc, err := udpFrom(s.source())
			if err != nil {
				s.t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer uc.Close()
				go func() {
					b := make([]byte, 2048)
					for {
						k, _, err := uc.ReadFrom(b)
						if err != nil {
							return
						}
						n.out.Add(int64(k))
					}
				}()
				dst, _ := net.ResolveUDPAddr("udp", s.addr)
				b := make([]byte, 1400)
				for i := range 500 {
					rand.Read(b)
					size := 20 + i*7%1380
					switch i % 4 {
					case 0: // a long header claiming QUIC v1: an Initial that does not decrypt
						b[0] = 0xc0 | b[0]&0x0f
						binary.BigEndian.PutUint32(b[1:], 1)
						size = 1200
					case 1: // an unknown version, padded: version negotiation's case
						b[0] |= 0x80
						binary.BigEndian.PutUint32(b[1:], 0x1a2a3a4a)
						size = 1200
					case 2: // a short header for no connection
						b[0] = 0x40 | b[0]&0x3f
					}
					uc.WriteTo(b[:size], dst)
					n.in.Add(int64(size))
				}
				time.Sleep(500 * time.Millisecond)
			}()
		}
		wg.Wait()
		if n.ratio() > 3 {
			s.failf("garbage datagrams: the proxy sent %.2f bytes per byte received", n.ratio())
		}
		s.quicLogin("after garbage datagrams")
		return fmt.Sprintf("10,000 datagrams (%d KB) from 20 addresses: %d bytes back (%.3f per byte); a quic login after",
			n.in.Load()>>10, n.out.Load(), n.ratio())
	}},
	{"QUIC Initial flood", 64, func(s *siege) string {
		if !s.quic {
			return "no QUIC listener"
		}
		// 600 clients from spoofed-like sources (20 addresses, a port
		// each) send real Initials and never read an answer; meanwhile a
		// real client logs in.
		var n udpCount
		var wg sync.WaitGroup
		for i := range 600 {
			src := s.source()
			if i%30 != 0 {
				src = fmt.Sprintf("127.0.%d.%d", 10+s.nextSrc/250, 1+s.nextSrc%250)
			}
			uc, err := udpFrom(src)
			if err != nil {
				s.t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tr := &quic.Transport{Conn: spoofedConn{c: uc, n: &n}}
				defer tr.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				dst, _ := net.ResolveUDPAddr("udp", s.addr)
				tc := quicTLS.Clone()
				tc.NextProtos = []string{"h3"}
				tr.Dial(ctx, dst, tc, &quic.Config{})
			}()
		}
		time.Sleep(300 * time.Millisecond)
		s.quicLogin("during the Initial flood")
		wg.Wait()
		if n.ratio() > 3 {
			s.failf("Initial flood: the proxy sent %.2f bytes per byte received", n.ratio())
		}
		if n.retries.Load() == 0 {
			s.failf("Initial flood: no Retry was sent")
		}
		return fmt.Sprintf("600 unanswering clients sent %d KB: the proxy sent %d KB back (%.3f per byte), %d Retry packets; a quic login during it",
			n.in.Load()>>10, n.out.Load()>>10, n.ratio(), n.retries.Load())
	}},
	{"QUIC idle connections", 64, func(s *siege) string {
		if !s.quic {
			return "no QUIC listener"
		}
		qs, done := s.quicConns(1000, 100)
		defer done()
		admitted := len(qs)
		// A connection that opens no session ends at the login timeout
		// (5 s here).
		closed := closedWithin(qs, 15*time.Second)
		if closed != admitted {
			s.failf("idle QUIC connections: %d of %d admitted still open after 15 s", admitted-closed, admitted)
		}
		s.quicLogin("after idle QUIC connections")
		return fmt.Sprintf("1000 connections from 100 addresses: %d admitted (the pre-login and per-address caps refused the rest), all closed at the login timeout", admitted)
	}},
	{"QUIC unfinished CONNECT", 32, func(s *siege) string {
		if !s.quic {
			return "no QUIC listener"
		}
		qs, done := s.quicConns(100, 10)
		defer done()
		for _, q := range qs {
			if str, err := q.Conn.OpenStream(); err == nil {
				str.Write([]byte{0x01, 0x40, 200, 0, 0}) // a HEADERS frame's start, and no more
			}
		}
		closed := closedWithin(qs, 15*time.Second)
		if closed != len(qs) {
			s.failf("unfinished CONNECTs: %d of %d still open after 15 s", len(qs)-closed, len(qs))
		}
		s.quicLogin("after unfinished CONNECTs")
		return fmt.Sprintf("%d connections sent the start of a CONNECT: all closed at the login timeout", len(qs))
	}},
}
