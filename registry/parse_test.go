package registry

import (
	"strconv"
	"strings"
	"testing"
)

// A stop request's payload comes through the database from any client of
// it: it names a session or is ignored, never anything else.
func FuzzParseSession(f *testing.F) {
	for _, s := range []string{"host/127.0.0.2:14500/17", "a/b/proxy-3", "/1", "x/", "x/-1", "x/18446744073709551616", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, id, ok := parseSession(s)
		if !ok {
			return
		}
		if name == "" || !strings.HasPrefix(s, name+"/") {
			t.Fatalf("%q: instance %q", s, name)
		}
		if n, err := strconv.ParseUint(strings.TrimPrefix(s[len(name)+1:], "proxy-"), 10, 64); err != nil || n != id {
			t.Fatalf("%q: id %d", s, id)
		}
		if (Session{Instance: name, ID: id}).Name() != name+"/"+strconv.FormatUint(id, 10) {
			t.Fatal("Name does not round-trip")
		}
	})
}
