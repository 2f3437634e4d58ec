package authn

import (
	"os/user"
	"strconv"
	"testing"
)

func TestResolveIDs(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no nobody user on this system: %v", err)
	}
	nuid, _ := strconv.Atoi(nobody.Uid)
	// Debian has no group "nobody": the seed's "nobody nobody" must still
	// resolve, to nogroup.
	wantGID := -1
	if g, err := user.LookupGroup("nogroup"); err == nil {
		wantGID, _ = strconv.Atoi(g.Gid)
	} else if g, err := user.LookupGroup("nobody"); err == nil {
		wantGID, _ = strconv.Atoi(g.Gid)
	}
	for _, in := range [][2]string{{"nobody", "nobody"}, {"", ""}, {"nobody", "nogroup"}} {
		u, g, err := ResolveIDs(in[0], in[1])
		if err != nil || u != nuid || g != wantGID {
			t.Errorf("%q: %d %d %v (want %d %d)", in, u, g, err, nuid, wantGID)
		}
	}
	if u, g, err := ResolveIDs("1234", "5678"); err != nil || u != 1234 || g != 5678 {
		t.Errorf("numbers: %d %d %v", u, g, err)
	}
	if _, _, err := ResolveIDs("no-such-user-xyz", ""); err == nil {
		t.Error("unknown user resolved")
	}
	if _, _, err := ResolveIDs("nobody", "no-such-group-xyz"); err == nil {
		t.Error("unknown group resolved")
	}
}
