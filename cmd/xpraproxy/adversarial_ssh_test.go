package main

import (
	"crypto/rand"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

// The SSH cases of the adversarial suite (docs/ssh.md), run by the same
// siege after the others: SSH arrives on the same port, so every bound
// of the front door applies to it.
func init() {
	attackCases = append(attackCases, sshAttackCases...)
	rootSkipped["SSH stalled key exchange"] = "pre-login only; waits for the 5 s login timeout"
	rootSkipped["1,000 half-open SSH handshakes"] = "pre-login only; holds connections until the login timeout"
}

// sshDial logs in over SSH from source with password ("" for none).
func (s *siege) sshDial(source, user, password string, banner *string) (*ssh.Client, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	nc, err := d.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	conf := &ssh.ClientConfig{User: user, HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
	if password != "" {
		conf.Auth = []ssh.AuthMethod{ssh.Password(password)}
	}
	if banner != nil {
		conf.BannerCallback = func(m string) error { *banner += m; return nil }
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(nc, s.addr, conf)
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// manySources spreads connections over n fresh addresses.
func (s *siege) manySources(n int) func() string {
	var srcs []string
	for range n {
		srcs = append(srcs, s.source())
	}
	var mu sync.Mutex
	i := 0
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		i++
		return srcs[i%len(srcs)]
	}
}

var sshAttackCases = []attackCase{
	{"SSH garbage after the banner", 32, func(s *siege) string {
		junk := make([]byte, 64<<10)
		rand.Read(junk)
		b := append([]byte("SSH-2.0-attacker\r\n"), junk...)
		answers := s.sendAndRead(100, b, s.tenAddresses())
		return s.expectAll("ssh garbage", answers, "SSH-2.0-xpraproxy")
	}},
	{"SSH stalled key exchange", 32, func(s *siege) string {
		// A banner, then nothing: closed at the login timeout (5 s).
		conns := s.rawDial(40, s.tenAddresses())
		defer hold(conns)()
		start := time.Now()
		answers := parallel(conns, func(c net.Conn) string {
			c.Write([]byte("SSH-2.0-stall\r\n"))
			out, _ := readAll(c, 15*time.Second)
			return out
		})
		d := time.Since(start)
		if d > 12*time.Second {
			s.failf("stalled SSH key exchanges held for %v", d)
		}
		s.expectAll("ssh stalled", answers, "SSH-2.0-xpraproxy")
		return fmt.Sprintf("40 stalled key exchanges closed after %v", d.Round(time.Second))
	}},
	{"1,000 half-open SSH handshakes", 64, func(s *siege) string {
		// Banners from 100 addresses, held: the pre-login cap holds
		// them (the oldest make way), each a goroutine and a key
		// exchange's state; a correct login still gets in.
		srcs := s.manySources(100)
		var conns []net.Conn
		for range 1000 {
			d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcs())}}
			c, err := d.Dial("tcp", s.addr)
			if err != nil {
				continue
			}
			c.Write([]byte("SSH-2.0-halfopen\r\n"))
			conns = append(conns, c)
		}
		defer hold(conns)()
		time.Sleep(time.Second)
		s.correctLogin("during 1,000 half-open SSH handshakes")
		return fmt.Sprintf("%d connections sent a banner and stopped; a correct login got in meanwhile", len(conns))
	}},
	{"SSH brute force", 16, func(s *siege) string {
		src := s.source()
		start := time.Now()
		throttled := 0
		for range 30 {
			var banner string
			if c, err := s.sshDial(src, "good", "wrong", &banner); err == nil {
				c.Close()
				s.failf("ssh brute force: a wrong password got in")
			}
			if strings.Contains(banner, "too many failed logins") {
				throttled++
			}
		}
		var banner string
		if c, err := s.sshDial(src, "good", "goodpw", &banner); err == nil {
			c.Close()
			s.failf("ssh brute force: the attacking address is not locked out")
		}
		if throttled < 20 {
			s.failf("ssh brute force: %d of 30 attempts throttled", throttled)
		}
		c, err := s.sshDial(s.source(), "good", "goodpw", nil)
		if err != nil {
			s.failf("ssh brute force: a correct SSH login from another address: %v", err)
		} else {
			c.Close()
		}
		return fmt.Sprintf("30 wrong SSH passwords in %v: %d refused unchecked with the lockout's banner; other addresses unaffected",
			time.Since(start).Round(time.Millisecond), throttled)
	}},
	{"SSH requests other than exec", 16, func(s *siege) string {
		c, err := s.sshDial(s.source(), "good", "goodpw", nil)
		if err != nil {
			s.failf("ssh login: %v", err)
			return "login failed"
		}
		defer c.Close()
		refused := 0
		if _, _, err := c.OpenChannel("direct-tcpip", nil); err != nil {
			refused++
		}
		if ok, _, _ := c.SendRequest("tcpip-forward", true, nil); !ok {
			refused++
		}
		sess, err := c.NewSession()
		if err != nil {
			s.failf("ssh session: %v", err)
			return "no session"
		}
		if sess.RequestPty("xterm", 25, 80, nil) != nil {
			refused++
		}
		if sess.Setenv("LD_PRELOAD", "/tmp/x.so") != nil {
			refused++
		}
		if sess.RequestSubsystem("sftp") != nil {
			refused++
		}
		if sess.Shell() != nil {
			refused++
		}
		if ok, _ := sess.SendRequest("auth-agent-req@openssh.com", true, nil); !ok {
			refused++
		}
		if ok, _ := sess.SendRequest("x11-req", true, ssh.Marshal(struct {
			Single bool
			Proto  string
			Cookie string
			Screen uint32
		}{false, "MIT-MAGIC-COOKIE-1", "00", 0})); !ok {
			refused++
		}
		sess.Close()
		if refused != 8 {
			s.failf("ssh: %d of 8 requests refused", refused)
		}
		// The connection still serves xpra after all that.
		ch, reqs, err := c.OpenChannel("session", nil)
		if err != nil {
			s.failf("ssh: no session after the refusals: %v", err)
			return "no xpra channel"
		}
		go ssh.DiscardRequests(reqs)
		if ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"xpra _proxy"})); !ok || err != nil {
			s.failf("ssh: xpra _proxy refused: %v", err)
			return "exec refused"
		}
		xc := xpratest.NewClient(sshChannelConn{ch}, nil)
		if err := xc.Send(frame.Packet{"hello", xpratest.Hello("good")}); err != nil {
			s.failf("ssh hello: %v", err)
		}
		if p, err := xc.ReadPacket(); err != nil || p.Type() != "hello" {
			s.failf("ssh: after the refusals the xpra channel got %v %v", p, err)
		}
		return "forwarding, agent, X11, pty, env, sftp and a shell refused; xpra _proxy then relayed"
	}},
}

// sshChannelConn is an SSH channel as an xpratest client's connection
// (ReadPacket only: deadlines are not the channel's).
type sshChannelConn struct{ ssh.Channel }

func (sshChannelConn) LocalAddr() net.Addr              { return nil }
func (sshChannelConn) RemoteAddr() net.Addr             { return nil }
func (sshChannelConn) SetDeadline(time.Time) error      { return nil }
func (sshChannelConn) SetReadDeadline(time.Time) error  { return nil }
func (sshChannelConn) SetWriteDeadline(time.Time) error { return nil }
