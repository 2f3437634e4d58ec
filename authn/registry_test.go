package authn

import (
	"strings"
	"testing"
)

// Without the packages that register them (this test binary imports
// neither), pam and sqlite fail with the import that would bring them, an
// unknown name lists the modules there are, and a module registered twice
// is a panic, as database/sql's drivers.
func TestRegistry(t *testing.T) {
	for name, want := range map[string]string{
		"pam":    "authn/pam",
		"sqlite": "authn/sqliteauth",
		"nosuch": "known: allow,",
	} {
		_, err := New(Spec{Name: name, Options: map[string]string{}}, Env{})
		if err == nil || !strings.Contains(err.Error(), `"`+name+`"`) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := OpenSQL("sqlite:///tmp/x.sdb", 1, 0); err == nil || !strings.Contains(err.Error(), "authn/sqliteauth") {
		t.Errorf("sqlite:/// without its package: %v", err)
	}
	Register("test-only", newAllow)
	if m, err := New(Spec{Name: "test-only", Options: map[string]string{}}, Env{}); err != nil || m.Name() != "test-only" {
		t.Errorf("a registered module: %v %v", m, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("a second Register of one name did not panic")
		}
	}()
	Register("test-only", newAllow)
}
