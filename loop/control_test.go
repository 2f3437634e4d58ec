package loop

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// The control plane in one process: sessions listed by name, one
// connection's info with its passive latency, one stopped while the other
// carries on, counters, then a shutdown that tells the client why.
func TestControlInfoStopShutdown(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t,
		"foo|bar|||tcp://"+fs.Addr()+"/", "moo|cow|||tcp://"+fs.Addr()+"/")}, Options{})
	c1, c2 := dialProxy(t, addr), dialProxy(t, addr)
	if p := c1.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("foo: %s", p)
	}
	if p := c2.login(t, "moo", "cow"); p.Type() != "hello" {
		t.Fatalf("moo: %s", p)
	}
	// A client ping and the server's echo: the server's round trip.
	c1.send(frame.Packet{"ping", 1, 0, "x"})
	if p := c1.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("ping: %s", p)
	}
	all := srv.SessionsInfo()
	if len(all) != 2 {
		t.Fatalf("sessions: %v", all)
	}
	var fooID uint64
	for _, kv := range all {
		d := kv.Value.(frame.Dict)
		if u, _ := d.Text("user"); u == "foo" {
			id, _ := d.Int("session")
			fooID = uint64(id)
			if name, _ := frame.AsText(kv.Key); name != "proxy-"+itoa(id) {
				t.Errorf("session %d listed as %s", id, name)
			}
		}
	}
	info, ok := srv.SessionInfo(fooID)
	if !ok {
		t.Fatalf("no info for session %d", fooID)
	}
	lat, _ := info.Get("latency")
	if us, _ := lat.(frame.Dict).Int("server-us"); us <= 0 {
		t.Errorf("server latency not measured: %v", info)
	}
	for _, k := range []string{"client", "server", "client-to-server", "server-to-client", "pid"} {
		if !info.Has(k) {
			t.Errorf("session info lacks %s: %v", k, info)
		}
	}
	if _, ok := srv.SessionInfo(999); ok {
		t.Error("info for a session that does not exist")
	}

	if !srv.StopSession(fooID) {
		t.Fatal("StopSession found nothing")
	}
	expectDisconnect(t, c1.recv(t), "proxy instance stopped by request")
	c2.send(frame.Packet{"ping", 2, 0, "x"})
	if p := c2.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("the other session after a stop: %s", p)
	}

	time.Sleep(1500 * time.Millisecond) // a full sweep
	c := srv.Counters()
	if c.Handshakes["relayed"] != 2 || c.C2S.Packets < 2 || c.S2C.Bytes == 0 {
		t.Errorf("counters: %+v", c)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go srv.Shutdown(ctx, "going down")
	expectDisconnect(t, c2.recv(t), "going down")
}

func itoa(n int64) string { return fmt.Sprint(n) }

// A connection authenticated elsewhere joins a server without listeners
// (a worker) and relays; its end is reported.
func TestAdopt(t *testing.T) {
	fs := startFakeServer(t, "")
	ended := make(chan uint64, 1)
	cfg := &relay.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Limits: relay.Limits{ConnectTimeout: 5 * time.Second, LoginTimeout: 5 * time.Second, MaxPacketSize: 16 << 20}}
	// gnet needs a listener to lend its loops.
	refuse := *cfg
	srv := New([]Listener{{Network: "unix", Address: filepath.Join(t.TempDir(), "refuse"), Config: &refuse}},
		Options{Config: cfg, OnClosed: func(id uint64) { ended <- id }})
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	<-srv.Ready()
	t.Cleanup(func() { srv.Stop(context.Background()); <-errc })

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	tc := dialProxy(t, ln.Addr().String())
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	w := frame.Writer{Encoding: frame.Rencode}
	hb, _ := w.AppendPacket(nil, frame.Packet{"hello", hello("foo")})
	target, _ := route.ParseTarget("tcp://" + fs.Addr() + "/")
	h := &relay.Handoff{ID: 77, User: "foo", Peer: "tcp test", Candidates: []route.Candidate{{Display: target.String(), Target: target}}, Hello: hb, Started: time.Now()}
	if err := srv.Adopt(h, accepted); err != nil {
		t.Fatal(err)
	}
	accepted.Close() // gnet has its own copy
	if p := tc.recv(t); p.Type() != "hello" {
		t.Fatalf("adopted client got %s", p)
	}
	tc.send(frame.Packet{"ping", 3, 0, "x"})
	if p := tc.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("ping: %s", p)
	}
	if d, ok := srv.SessionInfo(77); !ok || func() string { u, _ := d.Text("user"); return u }() != "foo" {
		t.Errorf("adopted session info: %v %v", ok, d)
	}
	tc.Conn.Close()
	select {
	case id := <-ended:
		if id != 77 {
			t.Errorf("ended %d, want 77", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("session end not reported")
	}
}
