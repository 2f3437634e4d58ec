package route

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

func TestSelectors(t *testing.T) {
	members := func() []Member {
		return []Member{{Display: "a", Sessions: 3, Index: 0}, {Display: "b", Sessions: 1, Index: 1}, {Display: "c", Sessions: 1, Index: 2}}
	}
	order := func(m []Member) string {
		var s []string
		for _, x := range m {
			s = append(s, x.Display)
		}
		return strings.Join(s, "")
	}
	for _, tc := range []struct{ policy, want string }{
		{"least-sessions", "bca"}, // ties keep the configured order
		{"first-live", "abc"},
	} {
		sel, err := NewSelector(tc.policy)
		if err != nil {
			t.Fatal(err)
		}
		m := members()
		sel.Order(m)
		if got := order(m); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.policy, got, tc.want)
		}
	}
	sel, _ := NewSelector("random")
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		m := members()
		sel.Order(m)
		got := order(m)
		o := []byte(got)
		slices.Sort(o)
		if string(o) != "abc" {
			t.Fatalf("random lost or duplicated a member: %s", got)
		}
		seen[got[:1]] = true
	}
	if len(seen) != 3 {
		t.Errorf("random put only %v first in 200 orders", seen)
	}
	if _, err := NewSelector("round-robin-ish"); err == nil || !strings.Contains(err.Error(), "first-live, least-sessions, random") {
		t.Errorf("unknown policy: %v", err)
	}
	if !slices.Equal(Policies(), []string{"first-live", "least-sessions", "random"}) {
		t.Errorf("Policies: %v", Policies())
	}
}

func TestPoolCounts(t *testing.T) {
	p, err := ParsePool("farm:least-sessions:tcp://127.0.0.1:1/,tcp://127.0.0.1:2/")
	if err != nil {
		t.Fatal(err)
	}
	a, b := "tcp://127.0.0.1:1/", "tcp://127.0.0.1:2/"
	first := func(id uint64) string {
		c, err := p.Pick(id, Hints{})
		if err != nil {
			t.Fatal(err)
		}
		return c[0].Display
	}
	if first(1) != a || first(2) != b || first(3) != a {
		t.Errorf("least-sessions does not alternate: %v", p.Status())
	}
	p.Use(3, b) // session 3 reached b after all
	if st := p.Status(); st[a][1] != 1 || st[b][1] != 2 {
		t.Errorf("after Use: %v", st)
	}
	p.Failed(2, b, a) // b refused session 2, which moves on to a
	if st := p.Status(); st[a] != [2]int{1, 2} || st[b] != [2]int{0, 1} {
		t.Errorf("after Failed: %v", st)
	}
	for id := uint64(1); id <= 3; id++ {
		p.Release(id)
	}
	if st := p.Status(); st[a][1] != 0 || st[b][1] != 0 {
		t.Errorf("after Release: %v", st)
	}
	if c, _ := p.Pick(4, Hints{}); len(c) != 1 || c[0].Display != a {
		t.Errorf("a dead member is offered: %v", c)
	}
	for _, bad := range []string{"farm", "farm:random:", "farm:nope:tcp://h:1/", ":random:tcp://h:1/", "farm:random::100"} {
		if _, err := ParsePool(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRoute(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, "host-100"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pool, _ := ParsePool("farm:first-live:tcp://127.0.0.1:1/,tcp://127.0.0.1:2/")
	r := &Router{Pools: Pools{"farm": pool}, OwnDisplay: ":20", Hostname: "host"}
	local := Request{Dirs: []string{dir}, UID: os.Getuid()}
	for _, tc := range []struct {
		name  string
		req   Request
		want  []string // candidate displays
		start bool
		err   string
	}{
		{"local session", local, []string{":100"}, false, ""},
		{"explicit skips local", Request{Displays: []string{"tcp://h:5/"}, Explicit: true, Dirs: local.Dirs}, []string{"tcp://h:5/"}, false, ""},
		{"explicit and local", Request{Displays: []string{"tcp://h:5/"}, Dirs: local.Dirs, UID: local.UID}, nil, false, "please specify a display"},
		{"requested", Request{Displays: []string{"tcp://h:5/"}, Dirs: local.Dirs, UID: local.UID, Requested: "100"}, []string{":100"}, false, ""},
		{"pool", Request{Displays: []string{"pool:farm"}, Explicit: true}, []string{"tcp://127.0.0.1:1/", "tcp://127.0.0.1:2/"}, false, ""},
		{"missing pool", Request{Displays: []string{"pool:none"}, Explicit: true}, nil, false, "no target pool none"},
		{"none", Request{Explicit: true}, nil, false, "no displays found"},
		{"none, start", Request{Explicit: true, StartIfNone: true}, nil, true, ""},
		{"asked to start", Request{Displays: []string{":100"}, Explicit: true, StartNew: true}, nil, true, ""},
		{"proxy display", Request{Displays: []string{":20"}, Explicit: true}, nil, false, "no displays found"},
		{"bad entry", Request{Displays: []string{"ftp://x/"}, Explicit: true}, nil, false, "invalid display string"},
		{"gone local", Request{Displays: []string{":101"}, Explicit: true, Dirs: local.Dirs}, nil, false, "display :101 not found"},
	} {
		plan, err := r.Route(tc.req)
		if tc.err != "" {
			if _, ok := disconnect.Is(err, disconnect.Session); !ok || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want a session error %q", tc.name, err, tc.err)
			}
			continue
		}
		var got []string
		for _, c := range plan.Candidates {
			got = append(got, c.Display)
		}
		if err != nil || plan.Start != tc.start || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v start=%v %v", tc.name, got, plan.Start, err)
		}
		if (plan.Pool != nil) != (tc.name == "pool") {
			t.Errorf("%s: pool %v", tc.name, plan.Pool)
		}
	}
	if plan, _ := r.Route(local); plan.Candidates[0].Target.Address != filepath.Join(dir, "host-100") {
		t.Errorf("local socket not resolved: %+v", plan.Candidates[0].Target)
	}
}

// A fleet's hints: other instances' counts join the policy's, and the
// user's last member goes first while it is live, whatever the policy.
func TestPoolHints(t *testing.T) {
	p, _ := ParsePool("farm:least-sessions:tcp://u:secret@127.0.0.1:1/,tcp://127.0.0.1:2/,tcp://127.0.0.1:3/")
	order := func(h Hints) string {
		c, err := p.Pick(1, h)
		if err != nil {
			t.Fatal(err)
		}
		p.Release(1)
		var s []string
		for _, x := range c {
			s = append(s, x.Target.Address[len(x.Target.Address)-1:])
		}
		return strings.Join(s, "")
	}
	if got := order(Hints{}); got != "123" {
		t.Errorf("no hints: %s", got)
	}
	remote := map[string]int{"tcp://u:***@127.0.0.1:1/": 2, "tcp://127.0.0.1:2/": 1}
	if got := order(Hints{Remote: remote}); got != "321" {
		t.Errorf("fleet counts: %s", got)
	}
	if got := order(Hints{Remote: remote, Prefer: "tcp://u:***@127.0.0.1:1/"}); got != "132" {
		t.Errorf("affinity: %s", got)
	}
	p.Failed(9, "tcp://u:secret@127.0.0.1:1/", "")
	if got := order(Hints{Prefer: "tcp://u:***@127.0.0.1:1/"}); got != "23" {
		t.Errorf("affinity to a dead member: %s", got)
	}
}
