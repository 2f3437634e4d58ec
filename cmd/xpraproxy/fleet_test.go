package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/dbtest"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/registry"
)

// fleet is three xpraproxy instances on 127.0.0.2/.3/.4 sharing one
// PostgreSQL (users and the session registry), behind HAProxy in tcp mode.
type fleet struct {
	pg        *dbtest.Server
	instances []*proxy
	port      int // HAProxy's, on 127.0.0.1
	ha        *exec.Cmd
}

const fleetExpiry = 6 * time.Second

// sqlCmd runs `xpraproxy sql` (the admin command under test).
func sqlCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(env.bin, append([]string{"sql"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("xpraproxy sql ... %s: %v\n%s", args[len(args)-1], err, out)
	}
	return string(out)
}

func startFleet(t *testing.T, pools ...string) *fleet {
	t.Helper()
	f := &fleet{pg: dbtest.Postgres(t), port: freePort()}
	auth := "sql,uri=" + f.pg.URI + ",timeout=3"
	args := []string{"--tcp-auth=" + auth, "--session-registry=" + f.pg.URI,
		"--registry-interval=500ms", "--registry-expiry=" + fleetExpiry.String(), "--max-user-sessions=2",
		"--proxy-ping=0", "--pool-probe-interval=1"}
	for _, p := range pools {
		args = append(args, "--pool="+p)
	}
	for i := 2; i <= 4; i++ {
		f.instances = append(f.instances, launchProxy(t, false, 0,
			append([]string{fmt.Sprintf("--bind-tcp=127.0.0.%d:PORT", i)}, args...)...))
	}
	cfg := fmt.Sprintf(`global
  maxconn 2000
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  retries 3
  option redispatch
listen xpra
  bind 127.0.0.1:%d
  balance roundrobin
  server a 127.0.0.2:%d check inter 300ms fall 1 rise 2
  server b 127.0.0.3:%d check inter 300ms fall 1 rise 2
  server c 127.0.0.4:%d check inter 300ms fall 1 rise 2
`, f.port, f.instances[0].port, f.instances[1].port, f.instances[2].port)
	path := filepath.Join(env.dir, fmt.Sprintf("haproxy-%d.cfg", f.port))
	os.WriteFile(path, []byte(cfg), 0o644)
	f.ha = exec.Command("haproxy", "-f", path, "-db")
	f.ha.Stderr, f.ha.Stdout = os.Stderr, nil
	if err := f.ha.Start(); err != nil {
		t.Fatal(err)
	}
	env.mu.Lock()
	env.procs = append(env.procs, f.ha)
	env.mu.Unlock()
	t.Cleanup(func() { f.ha.Process.Kill(); f.ha.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", f.port)); err == nil {
			c.Close()
			break
		}
		if i > 50 {
			t.Fatal("haproxy did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // health checks up
	return f
}

// sessions are the registry's rows, by user.
func (f *fleet) sessions(t *testing.T) map[string][]registry.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all, err := registry.Sessions(ctx, f.pg.URI, fleetExpiry)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]registry.Session{}
	for _, s := range all {
		out[s.User] = append(out[s.User], s)
	}
	return out
}

// waitSession waits until the registry shows user relaying through an
// instance other than not (""), and returns that session.
func (f *fleet) waitSession(t *testing.T, user, not string) registry.Session {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range f.sessions(t)[user] {
			if s.Instance != not && s.Display != "" && !strings.HasPrefix(s.Display, "pool:") && s.Client != "" {
				return s
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("the registry never showed a session of %s (not on %q): %v", user, not, f.sessions(t))
	return registry.Session{}
}

func member(s *xpraServer) string { return fmt.Sprintf("tcp://127.0.0.1:%d/", s.port) }

// Three instances, one PostgreSQL, HAProxy in front, a pool of three real
// xpra servers per generation: sessions spread over the whole fleet; an
// instance killed with SIGKILL sends its clients back to their sessions
// through another instance; its rows expire.
func TestFleet(t *testing.T) {
	var servers = map[string][]*xpraServer{}
	var pools []string
	for _, g := range generations() {
		var members []string
		for _, n := range []string{"sessionA", "sessionB", "sessionC"} {
			s := g.srv(t, n)
			servers[g.name] = append(servers[g.name], s)
			members = append(members, member(s))
		}
		pools = append(pools, "farm"+g.name+":least-sessions:"+strings.Join(members, ","))
	}
	f := startFleet(t, pools...)
	sqlCmd(t, f.pg.URI, "create")
	for _, g := range generations() {
		for i := 1; i <= 3; i++ {
			sqlCmd(t, "--cleartext", f.pg.URI, "add", fmt.Sprintf("u%s-%d", g.name, i), "pw", "", "", "pool:farm"+g.name)
		}
	}
	if out := sqlCmd(t, f.pg.URI, "list"); !strings.Contains(out, "u6.x-3") || !strings.Contains(out, "pool:farm3.1") {
		t.Fatalf("xpraproxy sql list:\n%s", out)
	}

	// Six real clients through HAProxy (roundrobin: instance i%3), one
	// after the other: least-sessions counts the whole fleet, so each
	// generation's three sessions go to its three servers, although every
	// instance relays two of them.
	clients := map[string]*client{}
	for _, g := range generations() {
		for i := 1; i <= 3; i++ {
			user := fmt.Sprintf("u%s-%d", g.name, i)
			var extra []string
			if g.six {
				extra = []string{"--reconnect=yes"} // 6.x clients come back by themselves
			}
			clients[user] = g.attach(t, fmt.Sprintf("tcp://%s:pw@127.0.0.1:%d/", user, f.port), extra...)
			f.waitSession(t, user, "")
			time.Sleep(700 * time.Millisecond) // one registry flush: the others see it
		}
	}
	all := f.sessions(t)
	perInstance := map[string]int{}
	for _, g := range generations() {
		used := map[string]string{}
		for i := 1; i <= 3; i++ {
			user := fmt.Sprintf("u%s-%d", g.name, i)
			s := all[user][0]
			perInstance[s.Instance]++
			if prev, dup := used[s.Display]; dup {
				t.Errorf("%s and %s share %s: least-sessions did not count the fleet", prev, user, s.Display)
			}
			used[s.Display] = user
		}
	}
	if len(perInstance) != 3 {
		t.Errorf("sessions per instance: %v", perInstance)
	}
	for _, g := range generations() {
		for i, s := range servers[g.name] {
			pixelsMatch(t, s, clients[fmt.Sprintf("u%s-%d", g.name, i+1)], s.name)
		}
	}

	// A marker typed on u3.1-2's server (the pool's second member: a tie
	// in least-sessions would pick the first).
	victim := all["u3.1-2"][0]
	srvB := servers["3.1"][1]
	if victim.Display != member(srvB) {
		t.Fatalf("u3.1-2 is on %s, not %s", victim.Display, member(srvB))
	}
	before := filepath.Join(env.dir, "fleet-before.png")
	after := filepath.Join(env.dir, "fleet-marked.png")
	sid, _ := windowID(srvB.display, true, srvB.name)
	snapshot(srvB.display, true, sid, before)
	typing := asUserX(srvB.display, "xdotool", "search", "--name", srvB.name, "windowfocus", "--sync",
		"type", "--delay", "20", "echo fleet-marker\n")
	typing.Env = append(typing.Env, "DISPLAY="+srvB.display)
	if out, err := typing.CombinedOutput(); err != nil {
		t.Fatalf("xdotool: %v %s", err, out)
	}
	time.Sleep(time.Second)
	snapshot(srvB.display, true, sid, after)
	if out, _ := exec.Command("compare", "-metric", "AE", before, after, "null:").CombinedOutput(); strings.TrimSpace(string(out)) == "0" {
		t.Fatal("the typed marker did not change the server's window")
	}

	// SIGKILL the instance relaying u3.1-2 (and, roundrobin, u6.x-2).
	var dead *proxy
	for _, p := range f.instances {
		if strings.HasSuffix(victim.Instance, "/"+p.host+":"+strconv.Itoa(p.port)) {
			dead = p
		}
	}
	if dead == nil {
		t.Fatalf("no instance named %s", victim.Instance)
	}
	dead.cmd.Process.Kill()
	dead.cmd.Wait()
	clients["u3.1-2"].exited(t, 30*time.Second) // 3.1.3's client ends on a lost connection
	// The 6.x client reconnects by itself; the 3.1.3 user starts theirs
	// again. Both come back through HAProxy to another instance and to
	// their own server (affinity), with the marker on screen.
	again := gen31.attach(t, fmt.Sprintf("tcp://u3.1-2:pw@127.0.0.1:%d/", f.port))
	back := f.waitSession(t, "u3.1-2", victim.Instance)
	if back.Display != victim.Display {
		t.Errorf("u3.1-2 came back to %s, not to its session on %s", back.Display, victim.Display)
	}
	pixelsMatch(t, srvB, again, srvB.name)
	six := all["u6.x-2"][0]
	if six.Instance == victim.Instance {
		back6 := f.waitSession(t, "u6.x-2", victim.Instance)
		if back6.Display != six.Display {
			t.Errorf("the 6.x client reconnected to %s, not %s", back6.Display, six.Display)
		}
		pixelsMatch(t, servers["6.x"][1], clients["u6.x-2"], servers["6.x"][1].name)
	} else {
		t.Errorf("u6.x-2 was on %s, u3.1-2 on %s: roundrobin did not alternate", six.Instance, victim.Instance)
	}
	// The dead instance's rows expire.
	deadline := time.Now().Add(fleetExpiry + 5*time.Second)
	for {
		left := 0
		for _, ss := range f.sessions(t) {
			for _, s := range ss {
				if s.Instance == victim.Instance {
					left++
				}
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows of the killed instance outlived its expiry", left)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// xpra info through any instance's own socket reports the fleet.
	live := f.instances[0]
	if live == dead {
		live = f.instances[1]
	}
	out, _ := gen31.command(false, "info", live.display, "--socket-dir="+live.sockDir, "--socket-dirs="+live.sockDir).CombinedOutput()
	if !strings.Contains(string(out), "fleet.instances.") || !strings.Contains(string(out), "fleet.sessions=") {
		t.Errorf("xpra info lacks the fleet:\n%s", tail(out, 1500))
	}
}

// The per-user limit, stop and list through the registry, and a database
// that goes away: with simulated clients (the bytes, not the pixels, are
// what these check) through each instance directly.
func TestFleetControl(t *testing.T) {
	f := startFleet(t)
	sim := xpratest.NewServer(t, xpratest.ServerOptions{})
	sqlCmd(t, f.pg.URI, "create")
	sqlCmd(t, "--cleartext", f.pg.URI, "add", "limited", "pw", "", "", sim.URL())
	login := func(i int) (*xpratest.Client, frame.Packet) {
		t.Helper()
		p := f.instances[i]
		c, err := xpratest.Dial(net.JoinHostPort(p.host, strconv.Itoa(p.port)), "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		pkt, err := c.Login("limited", "pw", nil)
		if err != nil {
			t.Fatalf("login through %s: %v", p.host, err)
		}
		return c, pkt
	}
	c1, p1 := login(0)
	c2, p2 := login(1)
	if p1.Type() != "hello" || p2.Type() != "hello" {
		t.Fatalf("two sessions of limited: %v / %v", p1, p2)
	}
	time.Sleep(time.Second) // flushed
	_, p3 := login(2)
	if reason := packetReason(p3); p3.Type() != "disconnect" || !strings.Contains(reason, "too many sessions: 2 running, the limit is 2") {
		t.Errorf("a third session on a third instance: %v", p3)
	}

	// xpraproxy sessions lists both; stop ends one held by another
	// instance, whose client is told why.
	out, err := exec.Command(env.bin, "sessions", "--registry="+f.pg.URI).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 sessions") || strings.Count(string(out), "limited") != 2 {
		t.Fatalf("xpraproxy sessions: %v\n%s", err, out)
	}
	if strings.Contains(string(out), strings.Split(strings.Split(f.pg.URI, ":")[2], "@")[0]) {
		t.Error("xpraproxy sessions shows the database password")
	}
	s := f.waitSession(t, "limited", "")
	if !strings.HasSuffix(s.Instance, f.instances[0].host+":"+strconv.Itoa(f.instances[0].port)) {
		s = f.sessions(t)["limited"][1]
	}
	if out, err := exec.Command(env.bin, "stop", s.Name(), "--registry="+f.pg.URI).CombinedOutput(); err != nil {
		t.Fatalf("xpraproxy stop %s: %v\n%s", s.Name(), err, out)
	}
	stopped := c1
	if !strings.Contains(s.Instance, f.instances[0].host) {
		stopped = c2
	}
	if p, err := stopped.Recv(10 * time.Second); err != nil || p.Type() != "disconnect" {
		t.Errorf("the stopped session's client got %v %v", p, err)
	}

	// PostgreSQL stops: the relayed session goes on, new logins are told
	// why within the login timeout; all is well when it is back.
	other := c2
	if stopped == c2 {
		other = c1
	}
	f.pg.Stop()
	if err := other.Ping(5 * time.Second); err != nil {
		t.Errorf("a relayed session stalled with the database down: %v", err)
	}
	start := time.Now()
	_, p := login(2)
	if reason := packetReason(p); p.Type() != "disconnect" || !strings.Contains(reason, "the user database is not available") || time.Since(start) > 31*time.Second {
		t.Errorf("a login with the database down: %v after %v", p, time.Since(start))
	}
	f.pg.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, p := login(2)
		if p.Type() == "hello" {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logins did not recover: %v", p)
		}
		time.Sleep(time.Second)
	}
	if err := other.Ping(5 * time.Second); err != nil {
		t.Errorf("after the database came back: %v", err)
	}
}

// packetReason is a disconnect packet's reason and message as text.
func packetReason(p frame.Packet) string {
	var parts []string
	for _, v := range p[1:] {
		s, _ := frame.AsText(v)
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
