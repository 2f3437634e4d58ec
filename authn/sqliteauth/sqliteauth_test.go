package sqliteauth

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xpraproxy/xpraproxy/authn"
)

func verifierFor(password string) func([]byte) bool {
	return func(pw []byte) bool { return string(pw) == password }
}

// xpra 3.1.3's own sqlite_auth.py reads the databases this package makes,
// and this package reads xpra's.
func TestSQLiteBothWaysWithXpra(t *testing.T) {
	const script = "/usr/lib/python3/dist-packages/xpra/server/auth/sqlite_auth.py"
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("xpra's sqlite_auth.py is missing (README's test command installs xpra): %v", err)
	}
	py := func(args ...string) string {
		out, err := exec.Command("/usr/bin/python3", append([]string{script}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sqlite_auth.py %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	dir := t.TempDir()
	// xpra creates, we read.
	theirs := filepath.Join(dir, "theirs.sdb")
	py(theirs, "create")
	py(theirs, "add", "foo", "bar", "nobody", "nogroup", "tcp://127.0.0.1:10100/")
	py(theirs, "add", "moo", "cow", "nobody", "nogroup", "tcp://127.0.0.1:10101/", "", "compression=0")
	db, err := Open(theirs)
	if err != nil {
		t.Fatal(err)
	}
	id, err := db.Lookup("moo", verifierFor("cow"), nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if id.UID != "nobody" || id.GID != "nogroup" || len(id.Displays) != 1 || id.Displays[0] != "tcp://127.0.0.1:10101/" ||
		len(id.SessionOptions) != 1 || id.SessionOptions[0] != (authn.Option{Key: "compression", Value: "0"}) {
		t.Errorf("moo: %+v", id)
	}
	if _, err := db.Lookup("foo", verifierFor("cow"), nil, "", ""); !errors.Is(err, authn.ErrAuthFailed) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := db.Lookup("nobody", verifierFor(""), nil, "", ""); !errors.Is(err, authn.ErrAuthFailed) {
		t.Errorf("unknown user: %v", err)
	}
	db.Close()
	// We create, xpra reads.
	ours := filepath.Join(dir, "ours.sdb")
	db, err = Create(ours)
	if err != nil {
		t.Fatal(err)
	}
	db.Add(authn.User{Username: "foo", Password: "bar", UID: "1000", GID: "1000", Displays: ":10,tcp://h:1/", SessionOptions: "compression_level=0"})
	db.Close()
	out := py(ours, "authenticate", "foo", "bar")
	if !strings.Contains(out, "success") || !strings.Contains(out, "tcp://h:1/") {
		t.Errorf("xpra on our database: %s", out)
	}
	if out := py(ours, "list"); !strings.Contains(out, "foo") {
		t.Errorf("xpra list: %s", out)
	}
	if _, err := Create(ours); err == nil {
		t.Error("create over an existing table succeeded")
	}
}

// The module and the sql module's sqlite:/// URIs, as authn.New sees them
// once this package is imported: a relative filename resolves against
// Env.Dir, a missing file fails the login (not the start), and the row's
// displays come back.
func TestModule(t *testing.T) {
	dir := t.TempDir()
	db, err := Create(filepath.Join(dir, "users.sdb"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Add(authn.User{Username: "foo", Password: "bar", Displays: "tcp://h:1/"}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, spec := range []authn.Spec{
		{Name: "sqlite", Options: map[string]string{"filename": "users.sdb"}},
		{Name: "sql", Options: map[string]string{"uri": "sqlite://" + filepath.Join(dir, "users.sdb")}},
	} {
		m, err := authn.New(spec, authn.Env{Dir: dir})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		id, err := m.Authenticate(authn.Request{Username: "foo", Verify: verifierFor("bar")})
		if err != nil || len(id.Displays) != 1 || id.Displays[0] != "tcp://h:1/" {
			t.Errorf("%s: %+v %v", spec, id, err)
		}
		if _, err := m.Authenticate(authn.Request{Username: "foo", Verify: verifierFor("baz")}); !errors.Is(err, authn.ErrAuthFailed) {
			t.Errorf("%s: wrong password: %v", spec, err)
		}
		// The row's password keys an encrypted link (xpra's get_password).
		km, ok := m.(authn.KeyModule)
		if !ok {
			t.Fatalf("%s: not a KeyModule", spec)
		}
		if k, err := km.EncryptionKey("foo"); err != nil || string(k) != "bar" {
			t.Errorf("%s: key %q %v", spec, k, err)
		}
		if k, err := km.EncryptionKey("nobody"); err != nil || k != nil {
			t.Errorf("%s: unknown user's key %q %v", spec, k, err)
		}
	}
	m, err := authn.New(authn.Spec{Name: "sqlite", Options: map[string]string{"filename": "missing.sdb"}}, authn.Env{Dir: dir})
	if err != nil {
		t.Fatalf("a missing file must not fail the start: %v", err)
	}
	if _, err := m.Authenticate(authn.Request{Username: "foo", Verify: verifierFor("bar")}); err == nil || errors.Is(err, authn.ErrAuthFailed) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := authn.New(authn.Spec{Name: "sqlite", Options: map[string]string{"file": "x"}}, authn.Env{}); err == nil {
		t.Error("an unknown option was accepted")
	}
}
