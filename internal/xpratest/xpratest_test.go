package xpratest

import (
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
)

// The harness's server speaks the generation of the client in front of
// it, challenges with its own password, and records what it got.
func TestServerBothGenerations(t *testing.T) {
	for _, tc := range []struct {
		gen     string
		dial    func(addr, source string) (*Client, error)
		hello   func(string) frame.Dict
		version string
	}{
		{"3.1", Dial, Hello, "3.1.3"},
		{"6.x", Dial6, Hello6, "6.5"},
	} {
		t.Run(tc.gen, func(t *testing.T) {
			srv := NewServer(t, ServerOptions{Password: "pw"})
			c, err := tc.dial(srv.Addr(), "")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := c.Login("u", "pw", tc.hello("u"))
			if err != nil || p.Type() != "hello" {
				t.Fatalf("login: %v %v", p, err)
			}
			caps, _ := p[1].(frame.Dict)
			if v, _ := caps.Text("version"); v != tc.version {
				t.Errorf("a %s client got a %s server", tc.gen, v)
			}
			if err := c.Ping(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			c.Send(frame.Packet{"stream", 3, 1000})
			for i := range 3 {
				p, err := c.Recv(5 * time.Second)
				if err != nil || p.Type() != "draw" {
					t.Fatalf("draw %d: %v %v", i, p, err)
				}
			}
			if n := len(srv.Hellos()); n != 2 {
				t.Errorf("%d hellos recorded (challenge and answer)", n)
			}
			if len(srv.Frames()) < 2 {
				t.Errorf("frames after the login: %v", srv.Frames())
			}
			c.Send(frame.Packet{"bye"})
			if p, _ := c.Recv(5 * time.Second); p.Type() != "disconnect" {
				t.Errorf("bye: %v", p)
			}
			select {
			case <-srv.Ended():
			case <-time.After(5 * time.Second):
				t.Error("the connection's end was not reported")
			}

			bad, err := tc.dial(srv.Addr(), "")
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			p, err = bad.Login("u", "wrong", tc.hello("u"))
			if reason, _ := frame.AsText(p[1]); err != nil || p.Type() != "disconnect" || !strings.Contains(reason, "authentication failed") {
				t.Errorf("a wrong password: %v %v", p, err)
			}
		})
	}
}
