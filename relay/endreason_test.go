package relay

import (
	"os"
	"strings"
	"testing"
	"time"
)

// docs/accesslog.md's table lists every close reason with its letter,
// and nothing else.
func TestCloseReasonsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/accesslog.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "| `") && strings.Count(line, "|") == 4 {
			rows++
		}
	}
	seen := map[string]bool{}
	for _, r := range CloseReasons() {
		name := r.String()
		if seen[name] || name == "unknown" || name == "none" {
			t.Errorf("reason %d named %q", r, name)
		}
		seen[name] = true
		if row := "| `" + name + "` | " + string(r.Who()) + " |"; !strings.Contains(string(doc), row) {
			t.Errorf("docs/accesslog.md has no row %q", row)
		}
	}
	// The reason table is the one with three columns.
	if rows != len(seen) {
		t.Errorf("%d rows in the reasons' table, want %d reasons", rows, len(seen))
	}
}

// A record from a worker is cut to a bound whatever it holds.
func TestAccessRecordBounded(t *testing.T) {
	big := strings.Repeat("x\n", 1<<20)
	r := AccessRecord{User: big, Client: big, Target: big, Text: big, Transport: big}.Bounded()
	for _, s := range []string{r.User, r.Client, r.Target, r.Text, r.Transport} {
		if len(s) > 8*maxAccessField {
			t.Errorf("a field of %d bytes", len(s))
		}
	}
	if r := (AccessRecord{User: "alice"}).Bounded(); r.User != "alice" {
		t.Errorf("a short field changed: %q", r.User)
	}
}

// The code is who and phase; the zero reason is no code a line shows.
func TestCode(t *testing.T) {
	for _, tc := range []struct {
		r    CloseReason
		p    Phase
		want string
	}{
		{CloseClientGone, PhaseRelay, "CR"}, {CloseServerGone, PhaseRelay, "SR"}, {CloseTooSlow, PhaseRelay, "PR"},
		{CloseShed, PhaseRelay, "PR"}, {CloseStopped, PhaseRelay, "LR"}, {CloseShutdown, PhaseTarget, "LT"},
		{CloseAuthFailed, PhaseAuth, "CA"}, {CloseLoginTimeout, PhaseHello, "CH"}, {CloseUpgradeDrain, PhaseClosing, "UD"},
	} {
		r := AccessRecord{Reason: tc.r, Phase: tc.p}
		if got := r.Code(); got != tc.want {
			t.Errorf("%s in %c: %q, want %q", tc.r, tc.p, got, tc.want)
		}
	}
}

// A handoff's record (a worker that could not adopt the session, or died
// with it) says what the handoff knew, bounded.
func TestHandoffAccessRecord(t *testing.T) {
	start := time.Now().Add(-time.Second)
	h := Handoff{ID: 9, User: "al\nice", Peer: "tcp 10.0.0.1:4000", Link: Link{Transport: "ws", TLS: true}, Started: start}
	r := h.AccessRecord(start.Add(time.Second), CloseInternal, "server error: cannot relay the connection")
	if r.ID != 9 || r.User != `"al\nice"` || r.Client != "10.0.0.1:4000" || r.Transport != "wss" ||
		r.Duration != time.Second || r.Code() != "PT" || r.Reason.String() != "internal" {
		t.Errorf("record %+v (code %s)", r, r.Code())
	}
	h.Transport = "ssh"
	if r := h.AccessRecord(start, CloseInternal, ""); r.Transport != "ssh" {
		t.Errorf("transport %q, want the handoff's own name", r.Transport)
	}
}
