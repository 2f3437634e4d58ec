package privsep

import (
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// A worker reports what the main process keeps: the pool member its
// session found dead and the one it used (the main process's pool counts
// move, its record names the member used), the session's bytes in its
// record, and its traffic, which stays counted after the worker exits.
// Without a session registry (NoRecords) the pool counts move the same and
// no record is kept.
func TestSupervisorReports(t *testing.T) {
	testenv.NeedRoot(t)
	for _, noRecords := range []bool{false, true} {
		t.Run(map[bool]string{false: "records", true: "no records"}[noRecords], func(t *testing.T) { testSupervisorReports(t, noRecords) })
	}
}

func testSupervisorReports(t *testing.T, noRecords bool) {
	srv, err := xpratest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "tcp://" + dead.Addr().String() + "/"
	dead.Close()
	pool, err := route.ParsePool("farm:first-live:" + deadURL + "," + srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	sup := &Supervisor{Exe: os.Args[0], IdleTimeout: time.Hour, Output: logs, Pools: route.Pools{"farm": pool},
		Log: slog.New(slog.NewTextHandler(logs, nil)), Config: WorkerConfig{Limits: relay.Limits{ConnectTimeout: 2 * time.Second},
			Hostname: "test"}, NoRecords: noRecords}
	sup.OnEnded = sup.Pools.Release
	defer sup.Close(5 * time.Second)

	// The main process picks (the dead member first: the probe has not
	// run) and hands the client over.
	cands, err := pool.Pick(7, route.Hints{})
	if err != nil || len(cands) != 2 || cands[0].Display != deadURL {
		t.Fatalf("pick: %v %v", cands, err)
	}
	client, server := socketPairFiles(t)
	defer client.Close()
	// The worker starts after the pair exists: it must not inherit the
	// client's end (then closing it would end nothing).
	syscall.CloseOnExec(int(client.Fd()))
	wr := frame.Writer{Encoding: frame.Rencode}
	hb, _ := wr.AppendPacket(nil, frame.Packet{"hello", xpratest.Hello("foo")})
	if err := sup.HandOff(&relay.Handoff{ID: 7, User: "foo", Pool: "farm", Candidates: cands, Hello: hb, Started: time.Now()}, nobody(), server); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := frame.NewStreamReader(client, 0)
	if p, err := r.ReadPacket(); err != nil || p.Type() != "hello" {
		t.Fatalf("client got %v %v\n%s", p, err, logs)
	}
	// Traffic both ways: a ping and its echo.
	ping, _ := wr.AppendPacket(nil, frame.Packet{"ping", time.Now().UnixMilli()})
	client.Write(ping)
	if p, err := r.ReadPacket(); err != nil || p.Type() != "ping_echo" {
		t.Fatalf("client got %v %v\n%s", p, err, logs)
	}
	waitFor(t, "the pool counts to move", func() bool {
		st := pool.Status()
		return st[deadURL] == [2]int{0, 0} && st[srv.URL()] == [2]int{1, 1}
	})
	var rec relay.Record
	if noRecords {
		if recs, _ := sup.Records(); len(recs) != 0 {
			t.Errorf("records kept without a registry: %+v", recs)
		}
	}
	waitFor(t, "a record with the member used and its bytes", func() bool {
		if noRecords {
			return true
		}
		recs, complete := sup.Records()
		if len(recs) == 1 {
			rec = recs[0]
		}
		return complete && len(recs) == 1 && rec.Display == srv.URL() && rec.Bytes > 0 && rec.Pool == "farm" && rec.User == "foo"
	})
	c, n := sup.Counters()
	if n != 1 || c.Sessions != 1 || c.Handshakes["relayed"] != 1 {
		t.Errorf("counters while relaying: %+v, %d workers", c, n)
	}

	// The session ends, the worker retires: what it relayed stays.
	client.Close()
	waitFor(t, "the session's end", func() bool { return pool.Status()[srv.URL()][1] == 0 })
	waitFor(t, "the worker's retirement", func() bool {
		sup.Sweep(time.Now().Add(2 * time.Hour))
		return len(sup.PIDs()) == 0
	})
	after, n := sup.Counters()
	if n != 0 || after.Sessions != 0 || after.Handshakes["relayed"] != 1 || after.S2C.Bytes < c.S2C.Bytes || after.S2C.Bytes == 0 {
		t.Errorf("counters after the worker exited: %+v (before: %+v)", after, c)
	}
	if recs, _ := sup.Records(); len(recs) != 0 {
		t.Errorf("records of an ended session: %+v", recs)
	}
	if strings.Contains(logs.String(), "cannot report") {
		t.Errorf("reports failed:\n%s", logs)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
