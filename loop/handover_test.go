package loop

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// A relaying session moved from one server to another mid-stream, both
// ways at once: every draw arrives whole, in order, with every byte
// right, every upload reaches the server, and the session goes on in the
// new server (a ping answered) while the old one holds nothing. Over
// plain tcp and over WebSocket (masked frames split mid-frame).
func TestHandOverMidStream(t *testing.T) {
	for _, overWS := range []bool{false, true} {
		name := "tcp"
		if overWS {
			name = "ws"
		}
		t.Run(name, func(t *testing.T) {
			fs := startFakeServer(t, "")
			var recs records
			cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Access: recs.add}
			addrA, oldSrv := startProxy(t, cfg, Options{})
			_, newSrv := startProxy(t, cfg, Options{})
			cl := dialHandoverClient(t, addrA, overWS)
			if p := cl.login(t, "foo", "bar"); p.Type() != "hello" {
				t.Fatalf("login: %v", p)
			}

			const draws, size = 60, 200_000
			const uploads, upSize = 40, 150_000
			if err := cl.send(frame.Packet{"stream", draws, size}); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Add(1)
			upErr := make(chan error, 1)
			go func() {
				defer wg.Done()
				for range uploads {
					if err := cl.send(frame.Packet{"upload", bytes.Repeat([]byte{7}, upSize)}); err != nil {
						upErr <- err
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
			handed := make(chan [2]int, 1)
			cl.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			for i := range draws {
				if i == draws/3 {
					// Mid-stream: the client is slow, the server has
					// more to send, uploads are in flight.
					go func() {
						h, k := oldSrv.HandOver(newSrv.Resume)
						handed <- [2]int{h, k}
					}()
				}
				p, err := cl.ReadPacket()
				if err != nil {
					t.Fatalf("draw %d: %v", i, err)
				}
				data, _ := p[7].([]byte)
				if p.Type() != "draw" || len(data) != size || bytes.Count(data, []byte{byte(i)}) != size || p[8] != int64(i) {
					t.Fatalf("draw %d: %s, %d bytes, seq %v", i, p.Type(), len(data), p[8])
				}
				if i < draws/3 {
					time.Sleep(5 * time.Millisecond)
				}
			}
			wg.Wait()
			select {
			case err := <-upErr:
				t.Fatal(err)
			default:
			}
			if got := <-handed; got != [2]int{1, 0} {
				t.Fatalf("handed, kept = %v, want [1 0]", got)
			}
			waitFor(t, "every upload at the server", func() bool { return fs.Uploaded() == uploads*upSize })
			if err := cl.send(frame.Packet{"ping", 5, 0, "x"}); err != nil {
				t.Fatal(err)
			}
			if p := cl.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("after the handover: %v", p)
			}
			if oldSrv.Sessions() != 0 || newSrv.Sessions() != 1 {
				t.Errorf("sessions old %d new %d, want 0 and 1", oldSrv.Sessions(), newSrv.Sessions())
			}
			select {
			case <-fs.Ended():
				t.Error("the server's connection ended")
			default:
			}
			// One access line, the new server's, when the session ends.
			if n := len(recs.all()); n != 0 {
				t.Errorf("%d access records at the handover", n)
			}
			cl.Close()
			waitFor(t, "the access record", func() bool { return len(recs.all()) > 0 })
			time.Sleep(100 * time.Millisecond)
			if got := recs.all(); len(got) != 1 || got[0].C2S.Packets < uploads || got[0].S2C.Bytes < draws*size || got[0].User != "foo" {
				t.Errorf("access records %+v", got)
			}
		})
	}
}

// records collects access records.
type records struct {
	mu   sync.Mutex
	recs []relay.AccessRecord
}

func (r *records) add(rec relay.AccessRecord) {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
}

func (r *records) all() []relay.AccessRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relay.AccessRecord(nil), r.recs...)
}

// A session the new process refuses comes back and goes on here.
func TestHandOverRefusedStays(t *testing.T) {
	fs := startFakeServer(t, "")
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}
	addr, srv := startProxy(t, cfg, Options{})
	cl := dialHandoverClient(t, addr, true)
	if p := cl.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %v", p)
	}
	cl.send(frame.Packet{"stream", 20, 100_000})
	if h, k := srv.HandOver(func(*HandedSession) error { return errors.New("refused") }); h != 0 || k != 1 {
		t.Fatalf("handed %d kept %d, want 0 and 1", h, k)
	}
	cl.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range 20 {
		p, err := cl.ReadPacket()
		if err != nil || p.Type() != "draw" || p[8] != int64(i) {
			t.Fatalf("draw %d: %v %v", i, p.Type(), err)
		}
	}
	cl.send(frame.Packet{"ping", 5, 0, "x"})
	if p := cl.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("after the refusal: %v", p)
	}
	if srv.Sessions() != 1 {
		t.Errorf("sessions %d, want 1", srv.Sessions())
	}
}

// A session whose peer reads nothing is not handed over: it stays and
// keeps working once the peer reads.
func TestHandOverSlowReaderStays(t *testing.T) {
	fs := startFakeServer(t, "")
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}
	addrA, oldSrv := startProxy(t, cfg, Options{})
	_, newSrv := startProxy(t, cfg, Options{})
	cl := dialHandoverClient(t, addrA, false)
	if p := cl.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %v", p)
	}
	const draws, size = 100, 250_000
	cl.send(frame.Packet{"stream", draws, size}) // 25 MB the client does not read for a while
	time.Sleep(300 * time.Millisecond)
	if h, k := oldSrv.HandOver(newSrv.Resume); h != 0 || k != 1 {
		t.Fatalf("handed %d kept %d, want 0 and 1", h, k)
	}
	cl.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := range draws {
		p, err := cl.ReadPacket()
		if err != nil || p.Type() != "draw" || p[8] != int64(i) {
			t.Fatalf("draw %d: %v %v", i, p.Type(), err)
		}
	}
	if oldSrv.Sessions() != 1 || newSrv.Sessions() != 0 {
		t.Errorf("sessions old %d new %d, want 1 and 0", oldSrv.Sessions(), newSrv.Sessions())
	}
}

// dialHandoverClient connects to addr, over WebSocket (masked, as a
// browser) when overWS.
func dialHandoverClient(t *testing.T, addr string, overWS bool) *testClient {
	t.Helper()
	if !overWS {
		return dialProxy(t, addr)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := ws.Dialer{Protocols: []string{"binary"}, NetDial: func(context.Context, string, string) (net.Conn, error) { return c, nil }}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := d.Upgrade(c, mustURL("ws://127.0.0.1/")); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	c.SetDeadline(time.Time{})
	return newTestClient(c, &wsStream{c: c, masked: true, r: &wsutil.Reader{Source: c, State: ws.StateClientSide}})
}

// A client on a unix socket is handed over like a tcp one; a TLS client
// is not (crypto/tls cannot export its state): it stays and goes on.
func TestHandOverUnixAndTLS(t *testing.T) {
	fs := startFakeServer(t, "")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: quiet,
		Limits: relay.Limits{LoginTimeout: 5 * time.Second, ChallengeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, MaxPacketSize: 16 << 20}}
	path := filepath.Join(t.TempDir(), "proxy.sock")
	oldSrv := New([]Listener{{Network: "unix", Address: path, Config: &cfg}}, Options{})
	errc := make(chan error, 1)
	go func() { errc <- oldSrv.Run() }()
	<-oldSrv.Ready()
	t.Cleanup(func() { oldSrv.Stop(context.Background()); <-errc })
	_, newSrv := startProxy(t, cfg, Options{})

	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	cl := newTestClient(nc, nil)
	if p := cl.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %v", p)
	}
	cl.send(frame.Packet{"stream", 20, 100_000})
	if h, k := oldSrv.HandOver(newSrv.Resume); h != 1 || k != 0 {
		t.Fatalf("unix: handed %d kept %d, want 1 and 0", h, k)
	}
	cl.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range 20 {
		p, err := cl.ReadPacket()
		if err != nil || p.Type() != "draw" || p[8] != int64(i) {
			t.Fatalf("unix draw %d: %v %v", i, p.Type(), err)
		}
	}
	cl.send(frame.Packet{"ping", 5, 0, "x"})
	if p := cl.recv(t); p.Type() != "ping_echo" || newSrv.Sessions() != 1 {
		t.Fatalf("unix after the handover: %v, %d sessions in the new server", p, newSrv.Sessions())
	}

	addr, tlsSrv := startOnePortServer(t, fs, "")
	tc := tlsClient(t, addr, nil)
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("tls login: %v", p)
	}
	if h, k := tlsSrv.HandOver(newSrv.Resume); h != 0 || k != 1 {
		t.Fatalf("tls: handed %d kept %d, want 0 and 1", h, k)
	}
	bigBothWays(t, 0, tc)
}
