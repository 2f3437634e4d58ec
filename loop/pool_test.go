package loop

import (
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// Target pools with three servers: 30 sessions spread by each policy; one
// server killed ends its sessions with a reason and new sessions go to the
// others (the failed connect marks it dead and moves on).
func TestPools(t *testing.T) {
	for _, policy := range route.Policies() {
		t.Run(policy, func(t *testing.T) {
			fs := []*xpratest.Server{startFakeServer(t, ""), startFakeServer(t, ""), startFakeServer(t, "")}
			var targets []string
			for _, s := range fs {
				targets = append(targets, "tcp://"+s.Addr()+"/")
			}
			pool, err := route.ParsePool("farm:" + policy + ":" + strings.Join(targets, ","))
			if err != nil {
				t.Fatal(err)
			}
			addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||pool:farm"), Pools: route.Pools{"farm": pool}}, Options{})
			var clients []*testClient
			for i := 0; i < 30; i++ {
				tc := dialProxy(t, addr)
				if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
					t.Fatalf("session %d: %s", i, packetText(p))
				}
				clients = append(clients, tc)
			}
			counts := []int{len(fs[0].Hellos()), len(fs[1].Hellos()), len(fs[2].Hellos())}
			switch policy {
			case "least-sessions":
				if counts[0] != 10 || counts[1] != 10 || counts[2] != 10 {
					t.Errorf("least-sessions spread %v, want 10 each", counts)
				}
			case "random":
				if counts[0] == 0 || counts[1] == 0 || counts[2] == 0 || counts[0]+counts[1]+counts[2] != 30 {
					t.Errorf("random spread %v", counts)
				}
			case "first-live":
				if counts[0] != 30 {
					t.Errorf("first-live spread %v, want all on the first", counts)
				}
			}
			// Kill the server with the most sessions.
			victim := 0
			for i := range counts {
				if counts[i] > counts[victim] {
					victim = i
				}
			}
			fs[victim].Close()
			lost := 0
			for _, tc := range clients {
				tc.Conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if p, err := tc.ReadPacket(); err == nil && p.Type() == "disconnect" {
					if !strings.Contains(packetText(p), "server connection lost") {
						t.Errorf("disconnect reason: %s", packetText(p))
					}
					lost++
				}
			}
			if lost != counts[victim] {
				t.Errorf("%d sessions ended with a reason, want the killed server's %d", lost, counts[victim])
			}
			before := []int{len(fs[0].Hellos()), len(fs[1].Hellos()), len(fs[2].Hellos())}
			// Six new sessions; random order may not try the dead target
			// in six (a 9% chance), so open more until it has been tried.
			opened := 0
			for i := 0; i < 6 || (policy == "random" && pool.Status()[targets[victim]][0] != 0 && i < 60); i++ {
				opened++
				tc := dialProxy(t, addr)
				if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
					t.Fatalf("after the kill, session %d: %s", i, packetText(p))
				}
				tc.send(frame.Packet{"ping", 1, 0, "x"})
				if p := tc.recv(t); p.Type() != "ping_echo" {
					t.Fatalf("ping: %s", p)
				}
			}
			added := 0
			for i := range fs {
				if i != victim {
					added += len(fs[i].Hellos()) - before[i]
				}
			}
			if added != opened {
				t.Errorf("new sessions on the live servers: %d of %d", added, opened)
			}
			st := pool.Status()
			if st[targets[victim]][0] != 0 {
				t.Errorf("killed target still live: %v", st)
			}
		})
	}
}

// The proxy pings both peers itself; echoes with its uuid come back to it
// (latency in the session's info) and are never forwarded, while the
// peers' own pings and echoes pass through untouched.
func TestProxyPings(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Limits: relay.Limits{PingInterval: 150 * time.Millisecond}}, Options{})
	tc := dialProxy(t, addr)
	if p := tc.login(t, "foo", "bar", "ping-echo-sourceid", true); p.Type() != "hello" {
		t.Fatalf("login: %s", packetText(p))
	}
	var proxyUUID string
	pings, ownEchoes := 0, 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && pings < 4 {
		tc.send(frame.Packet{"ping", time.Now().UnixMilli(), 0, "client-uuid"})
		for {
			p := tc.recv(t)
			if p.Type() == "ping" && len(p) >= 4 {
				// The proxy's ping: answer as xpra's client does.
				proxyUUID, _ = frame.AsText(p[3])
				pings++
				tc.send(frame.Packet{"ping_echo", p[1], 0, 0, 0, 0, p[3]})
				continue
			}
			if p.Type() == "ping_echo" {
				if sid, _ := frame.AsText(p[len(p)-1]); len(p) >= 7 && sid != "client-uuid" {
					ownEchoes++
				}
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pings < 2 || !strings.HasPrefix(proxyUUID, "xpraproxy-") {
		t.Fatalf("the proxy sent %d pings (uuid %q)", pings, proxyUUID)
	}
	if ownEchoes != 0 {
		t.Errorf("%d echoes of the proxy's own pings reached the client", ownEchoes)
	}
	all := srv.SessionsInfo()
	info := all[0].Value.(frame.Dict)
	lat, _ := info.Get("latency")
	ld := lat.(frame.Dict)
	hidden, _ := ld.Int("own-echoes")
	_, cp := ld.Get("client-ping")
	_, sp := ld.Get("server-ping")
	if hidden < 2 || !cp || !sp {
		t.Errorf("latency info: %v", ld)
	}
}
