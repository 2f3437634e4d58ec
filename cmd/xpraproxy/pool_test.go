package main

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
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

// serverLost waits up to within for want of the clients to be told their
// server is gone ("server connection lost"), and returns how many were.
func serverLost(t *testing.T, clients []*poolClient, want int, within time.Duration) int {
	t.Helper()
	ended := 0
	for deadline := time.Now().Add(within); ended < want && time.Now().Before(deadline); {
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
	return ended
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

// poolServers starts n servers of the generation (sharing on) named
// prefix0..., each stopped when the test ends, the ones that started
// included when another did not.
func poolServers(t *testing.T, g *generation, prefix string, n int) []*xpraServer {
	t.Helper()
	servers := make([]*xpraServer, n)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := g.startXpra(fmt.Sprintf("%s%d", prefix, i), "--sharing=yes")
			if err != nil {
				t.Error(err)
				return
			}
			servers[i] = s
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range servers {
			if s != nil {
				s.stop()
				s.kill() // one a test killed, or that does not stop
			}
		}
	})
	for _, s := range servers {
		if s == nil {
			t.Fatal("pool servers did not start")
		}
	}
	return servers
}

func testPoolRealServers(t *testing.T, g *generation) {
	servers := poolServers(t, g, "pool", 3)
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
	victim.kill()
	if ended := serverLost(t, clients, 10, 20*time.Second); ended != 10 {
		t.Fatalf("%d of the killed server's 10 sessions ended", ended)
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

// poolCounts reads the pool's members from the proxy's `xpra info`:
// target → sessions counted on it, and whether it is live.
func poolCounts(t *testing.T, p *proxy, pool string) (map[string]int, map[string]bool) {
	t.Helper()
	out, err := gen31.command(false, "info", p.display, "--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir).CombinedOutput()
	if err != nil {
		t.Fatalf("xpra info: %v\n%s", err, tail(out, 1500))
	}
	fields := map[string]map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^pools\.`+regexp.QuoteMeta(pool)+`\.members\.(\d+)\.(\w+)=(.*)$`).FindAllStringSubmatch(string(out), -1) {
		if fields[m[1]] == nil {
			fields[m[1]] = map[string]string{}
		}
		fields[m[1]][m[2]] = strings.TrimSpace(m[3])
	}
	sessions, live := map[string]int{}, map[string]bool{}
	for _, f := range fields {
		n, _ := strconv.Atoi(f["sessions"])
		sessions[f["target"]] = n
		live[f["target"]] = strings.EqualFold(f["live"], "true") || f["live"] == "1"
	}
	if len(sessions) == 0 {
		t.Fatalf("xpra info shows no members of pool %s:\n%s", pool, tail(out, 2000))
	}
	return sessions, live
}

// As root, a least-sessions pool of two real 3.1.3 servers: the workers
// that relay report the members they used and found dead to the main
// process, which holds the pool, so 4 clients spread 2/2 (the counts in
// its `xpra info`), and when one server is killed its clients are told
// and new ones fail over to the other (the probe is slow on purpose: the
// worker's dial finds the member dead).
func TestRootPoolRealServers(t *testing.T) {
	testenv.NeedRoot(t)
	g := gen31
	servers := poolServers(t, g, "rootpool", 2)
	a, b := target(servers[0]), target(servers[1])
	db := sqliteDB(t, []string{"pooluser", "pw", "nobody", "nogroup", "pool:farm"})
	p := startProxyAs(t, true, "--bind-tcp=127.0.0.1:PORT,auth=sqlite:filename="+db,
		"--pool=farm:least-sessions:"+a+","+b, "--pool-probe-interval=600")
	addr := fmt.Sprintf("127.0.0.1:%d", p.port)
	var leaked atomic.Int64
	var clients []*poolClient
	for i := 0; i < 4; i++ {
		clients = append(clients, dialPoolClient(t, g, addr, "pooluser", "pw", &leaked))
	}
	if ws := workers(t, p); len(ws) != 1 || ws[0].user != "nobody" {
		t.Fatalf("want the sessions in one worker as nobody, ps shows %+v", ws)
	}
	var sessions map[string]int
	var live map[string]bool
	eventually(t, "the pool counts 2/2", 10*time.Second, func() bool {
		sessions, live = poolCounts(t, p, "farm")
		return sessions[a] == 2 && sessions[b] == 2
	})

	servers[0].kill()
	if ended := serverLost(t, clients, 2, 20*time.Second); ended != 2 {
		t.Fatalf("%d of the killed server's 2 clients were told", ended)
	}
	eventually(t, "the killed server's sessions released", 10*time.Second, func() bool {
		sessions, _ = poolCounts(t, p, "farm")
		return sessions[a] == 0 && sessions[b] == 2
	})
	// The pool still thinks the killed member live (no probe since), and
	// it has the fewest sessions: the next client's dial fails over.
	for i := 0; i < 2; i++ {
		dialPoolClient(t, g, addr, "pooluser", "pw", &leaked)
	}
	sessions, live = poolCounts(t, p, "farm")
	if sessions[a] != 0 || sessions[b] != 4 || live[a] || !live[b] {
		t.Errorf("after the failover: sessions %v, live %v (want 0 and 4, %s dead)", sessions, live, a)
	}
	if log := p.logText(); !strings.Contains(log, "trying the next in its pool") {
		t.Errorf("no failover in the log:\n%s", tail([]byte(log), 2000))
	}
}
