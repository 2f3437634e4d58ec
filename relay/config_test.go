package relay_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// trackerCalls records what a session reports of its pool.
type trackerCalls struct {
	mu    sync.Mutex
	calls []string
}

func (tc *trackerCalls) Use(id uint64, display string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.calls = append(tc.calls, fmt.Sprintf("use %d %s", id, display))
}

func (tc *trackerCalls) Failed(id uint64, display, next string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.calls = append(tc.calls, fmt.Sprintf("failed %d %s %s", id, display, next))
}

// An adopted session (a root proxy's worker) has no pools of its own: it
// reports the member it found dead and the one it used to the process
// that picked them (Config.Track), and its record names the one used.
func TestAdoptReportsPool(t *testing.T) {
	srv := server(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "tcp://" + dead.Addr().String() + "/"
	dead.Close()
	var cands []route.Candidate
	for _, d := range []string{deadURL, srv.URL()} {
		tg, err := route.ParseTarget(d)
		if err != nil {
			t.Fatal(err)
		}
		cands = append(cands, route.Candidate{Display: d, Target: tg})
	}
	w := frame.Writer{Encoding: frame.Rencode}
	hello, _ := w.AppendPacket(nil, frame.Packet{"hello", xpratest.Hello("foo")})
	cfg := config(nil)
	tracked := map[string]*trackerCalls{}
	cfg.Track = func(pool string) relay.PoolTracker {
		tc := &trackerCalls{}
		tracked[pool] = tc
		return tc
	}
	h, c := &xpratest.Host{}, xpratest.NewConn("")
	s, err := relay.AdoptSession(cfg, h, c, &relay.Handoff{ID: 42, User: "foo", Pool: "farm", Candidates: cands, Hello: hello}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.Run(t, 10*time.Second)
	if !s.Relaying() {
		t.Fatalf("the adopted session does not relay: %s", words(c.Packets(t)))
	}
	want := []string{"failed 42 " + deadURL + " " + srv.URL(), "use 42 " + srv.URL()}
	if tc := tracked["farm"]; tc == nil || strings.Join(tc.calls, "|") != strings.Join(want, "|") {
		t.Errorf("reports %+v, want %q", tracked, want)
	}
	if rec, ok := s.Record(); !ok || rec.Pool != "farm" || rec.Display != route.RedactDisplay(srv.URL()) {
		t.Errorf("record %+v", rec)
	}
}

// NewConfig normalises its limits: a zero that cannot mean "none" is the
// default, one that can stays; everything derived from them is made.
func TestNewConfig(t *testing.T) {
	cfg := relay.NewConfig(relay.Limits{MaxTargetConnects: 3, StartXpra: []string{"/opt/xpra"}}, relay.Process{Hostname: "h", UID: 7})
	def := relay.DefaultLimits()
	if cfg.LoginTimeout != def.LoginTimeout || cfg.ChallengeTimeout != def.ChallengeTimeout || cfg.ConnectTimeout != def.ConnectTimeout ||
		cfg.MaxPacketSize != def.MaxPacketSize || cfg.MaxSessionBuffer != def.MaxSessionBuffer || cfg.LoginPacketSize != def.LoginPacketSize ||
		cfg.ConnectBuffer != def.ConnectBuffer {
		t.Errorf("zero limits not normalised: %+v", cfg.Limits)
	}
	if cfg.IdleTimeout != 0 || cfg.PingInterval != 0 || cfg.MaxStartedSessions != 0 {
		t.Errorf("a zero meaning never/no limit changed: %+v", cfg.Limits)
	}
	if cfg.Connects == nil || cfg.Connects.PerTarget != 3 || cfg.Generations == nil || cfg.StartPrograms == nil ||
		strings.Join(cfg.StartPrograms.Paths, ",") != "/opt/xpra" || cfg.Hostname != "h" || cfg.UID != 7 {
		t.Errorf("derived values: %+v", cfg)
	}
	if l := (relay.Limits{MaxPacketSize: 1000}).Normalized(); l.LoginPacketSize != 1000 {
		t.Errorf("login packets may be larger than packets: %d", l.LoginPacketSize)
	}
	if def.Normalized().LoginTimeout != def.LoginTimeout || def.PingInterval == 0 || len(def.StartXpra) == 0 {
		t.Errorf("defaults: %+v", def)
	}
}
