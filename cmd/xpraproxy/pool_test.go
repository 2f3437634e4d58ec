package main

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
)

// poolClient is a minimal xpra client (3.1's or 6.x's dialect) speaking
// to the proxy: it logs
// in, then reads everything the server sends, answers the proxy's pings
// and counts any echo of them that reaches it.
type poolClient struct {
	c          net.Conn
	leaked     *atomic.Int64 // echoes carrying the proxy's uuid
	disconnect chan string
}

func dialPoolClient(t *testing.T, g *generation, addr, user, password string, leaked *atomic.Int64) *poolClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := frame.Writer{Encoding: frame.Rencode}
	hello := frame.NewDict("version", "3.1.3", "username", user, "uuid", fmt.Sprintf("pool-%p", c),
		"rencode", true, "encoders", []any{"rencode"}, "compressors", []any{"lz4"}, "lz4", true,
		"digest", []any{"hmac", "hmac+sha256"}, "salt-digest", []any{"hmac+sha256"},
		"share", true, "windows", true, "client_type", "test", "ping-echo-sourceid", true,
		"desktop_size", []any{1024, 768}, "screen_sizes", []any{}, "encodings", []any{"rgb24", "png"})
	if g.six {
		w.Encoding = frame.RencodePlus
		hello.Set("version", "6.5")
		hello.Set("encoders", []any{"rencodeplus"})
		hello.Set("rencodeplus", frame.NewDict("", true))
		hello.Set("lz4", frame.NewDict("", true))
		hello.Delete("rencode")
	}
	send := func(p frame.Packet) {
		b, _ := w.AppendPacket(nil, p)
		c.Write(b)
	}
	send(frame.Packet{"hello", hello})
	r := frame.NewStreamReader(c, 64<<20)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		if p.Type() == "challenge" {
			salt, _ := p[1].([]byte)
			d, _ := frame.AsText(p[3])
			sd, _ := frame.AsText(p[4])
			resp, cs, err := authn.Response([]byte(password), salt, authn.Digest(d), authn.Digest(sd))
			if err != nil {
				t.Fatal(err)
			}
			h := append(frame.Dict(nil), hello...)
			h.Set("challenge_response", string(resp))
			h.Set("challenge_client_salt", cs)
			send(frame.Packet{"hello", h})
			continue
		}
		if p.Type() != "hello" {
			t.Fatalf("login: got %s %v", p, p)
		}
		break
	}
	c.SetReadDeadline(time.Time{})
	pc := &poolClient{c: c, leaked: leaked, disconnect: make(chan string, 1)}
	go func() {
		for {
			p, err := r.ReadPacket()
			if err != nil {
				return
			}
			switch p.Type() {
			case "ping":
				echo := frame.Packet{"ping_echo", p[1], 0, 0, 0, 0}
				if len(p) >= 4 {
					echo = append(echo, p[3])
				}
				send(echo)
			case "ping_echo":
				if sid, _ := frame.AsText(p[len(p)-1]); strings.HasPrefix(sid, "xpraproxy-") {
					leaked.Add(1)
				}
			case "disconnect":
				var parts []string
				for _, v := range p[1:] {
					s, _ := frame.AsText(v)
					parts = append(parts, s)
				}
				pc.disconnect <- strings.Join(parts, ": ")
				return
			}
		}
	}()
	return pc
}

// A pool of three real xpra servers (sharing on): 30 sessions spread by
// least-sessions, one server killed — its sessions end with a reason and
// new sessions go to the others — and the proxy's own pings answered by
// clients and servers without any echo of them reaching a client.
func TestPoolRealServers(t *testing.T) { forEachGen(t, testPoolRealServers) }

func testPoolRealServers(t *testing.T, g *generation) {
	var servers []*xpraServer
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := g.startXpra(fmt.Sprintf("pool%d", i), "--sharing=yes")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			servers = append(servers, s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(servers) != 3 {
		t.Fatal("pool servers did not start")
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.stop()
		}
	})
	var targets []string
	for _, s := range servers {
		targets = append(targets, target(s))
	}
	db := sqliteDB(t, []string{"pooluser", "pw", "nobody", "nogroup", "pool:farm"})
	p := startProxy(t, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		"--pool=farm:least-sessions:"+strings.Join(targets, ","), "--proxy-ping=1", "--pool-probe-interval=1")
	addr := fmt.Sprintf("127.0.0.1:%d", p.port)
	var leaked atomic.Int64
	var clients []*poolClient
	for i := 0; i < 30; i++ {
		clients = append(clients, dialPoolClient(t, g, addr, "pooluser", "pw", &leaked))
	}
	perTarget := func() map[string]int {
		out, _ := exec.Command(env.bin, "info", p.display, "--socket-dir="+p.sockDir).CombinedOutput()
		n := map[string]int{}
		for _, m := range regexp.MustCompile(`(?m)^sessions\.proxy-\d+\.target=(\S+)$`).FindAllStringSubmatch(string(out), -1) {
			n[m[1]]++
		}
		return n
	}
	spread := perTarget()
	for _, tg := range targets {
		if spread[tg] != 10 {
			t.Fatalf("least-sessions spread %v, want 10 on each of %v", spread, targets)
		}
	}
	time.Sleep(2500 * time.Millisecond) // proxy pings go out and come back

	// Kill the first server outright.
	victim := servers[0]
	exec.Command("pkill", "-9", "-f", "xpra.* start "+victim.display+" ").Run()
	exec.Command("pkill", "-9", "-f", "Xvfb-for-Xpra-"+victim.display+"( |$)").Run()
	ended := 0
	deadline := time.After(20 * time.Second)
	for ended < 10 {
		select {
		case <-deadline:
			t.Fatalf("%d of the killed server's 10 sessions ended", ended)
		default:
		}
		for _, c := range clients {
			select {
			case why := <-c.disconnect:
				if !strings.Contains(why, "server connection lost") {
					t.Errorf("reason: %q", why)
				}
				ended++
			default:
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; i < 6; i++ {
		dialPoolClient(t, g, addr, "pooluser", "pw", &leaked)
	}
	after := perTarget()
	if after[target(victim)] != 0 || after[targets[1]]+after[targets[2]] != 26 {
		t.Errorf("after the kill: %v", after)
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d echoes of the proxy's own pings reached clients", n)
	}
	out, _ := exec.Command(env.bin, "info", p.display, "--socket-dir="+p.sockDir).CombinedOutput()
	if !regexp.MustCompile(`(?m)\.latency\.own-echoes=[1-9]`).Match(out) {
		t.Errorf("the proxy's pings were never answered:\n%s", tail(out, 1500))
	}
}
