package authn

import (
	"bytes"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestGenMatchesXpra(t *testing.T) {
	// Values computed with Python's hmac as xpra's gendigest does
	// (key=client salt, msg=server salt; then key=password, msg=hex).
	cs, ss := bytes.Repeat([]byte("c"), 32), bytes.Repeat([]byte("s"), 64)
	for d, want := range map[Digest]string{
		"hmac+sha512": "b593b841ce6a53cfab392f408fd6476335f7d92bb7e4240ad690d9d1a72778d6dbbef0dee6e8044e7a55784adacccfd9b6628f61bdb2a3ff6ebe78dab54829fa",
		"hmac+sha256": "c784880673739d95ae3065f7e441efdec2212c02ecfdb4b6539be13715672f1e",
	} {
		combined, _ := Gen(d, cs, ss)
		got, _ := Gen(d, []byte("secret"), combined)
		if string(got) != want {
			t.Errorf("%s: %s", d, got)
		}
		ch := &Challenge{ServerSalt: ss, Digest: d, SaltDigest: d}
		v := ch.Verifier([]byte(want), cs)
		if v == nil || !v([]byte("secret")) || v([]byte("secreT")) || v([]byte("")) {
			t.Errorf("%s: verifier wrong", d)
		}
	}
	x, _ := Gen(DigestXOR, []byte("abc"), []byte{1, 2})
	if !bytes.Equal(x, []byte{'a' ^ 1, 'b' ^ 2, 'c'}) {
		t.Errorf("xor: %v", x)
	}
}

func TestChooseAndRespond(t *testing.T) {
	clientDigests := []string{"xor", "hmac", "hmac+sha256", "hmac+sha512", "des"}
	ch, err := NewChallenge(clientDigests, []string{"xor", "hmac+sha256"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Digest != "hmac+sha512" || ch.SaltDigest != "hmac+sha256" || len(ch.ServerSalt) != 64 {
		t.Fatalf("chose %+v", ch)
	}
	if _, err := NewChallenge([]string{"xor"}, []string{"hmac+sha256"}, false); err == nil {
		t.Error("xor chosen on an unencrypted link")
	}
	if _, err := NewChallenge([]string{"hmac"}, []string{"xor"}, false); err == nil {
		t.Error("xor salt digest accepted")
	}
	resp, cs, err := Response([]byte("pw"), ch.ServerSalt, ch.Digest, ch.SaltDigest)
	if err != nil {
		t.Fatal(err)
	}
	if v := ch.Verifier(resp, cs); v == nil || !v([]byte("pw")) {
		t.Error("our own response does not verify")
	}
	if v := ch.Verifier(resp, []byte("short")); v != nil {
		t.Error("short client salt accepted")
	}
}

func TestParseSpec(t *testing.T) {
	for in, want := range map[string]Spec{
		"sqlite,filename=./x.sdb":          {"sqlite", map[string]string{"filename": "./x.sdb"}},
		"sqlite:filename=./x.sdb":          {"sqlite", map[string]string{"filename": "./x.sdb"}},
		"allow":                            {"allow", map[string]string{}},
		"exec,command=/bin/true,timeout=3": {"exec", map[string]string{"command": "/bin/true", "timeout": "3"}},
	} {
		got, err := ParseSpec(in)
		if err != nil || got.Name != want.Name || len(got.Options) != len(want.Options) {
			t.Errorf("%q: %+v %v", in, got, err)
		}
		for k, v := range want.Options {
			if got.Options[k] != v {
				t.Errorf("%q: %s=%q", in, k, got.Options[k])
			}
		}
	}
	if _, err := ParseSpec("sqlite,filename"); err == nil {
		t.Error("option without = accepted")
	}
	if _, err := New(Spec{Name: "nosuch"}, Env{}); err == nil || !strings.Contains(err.Error(), "known:") {
		t.Errorf("unknown module: %v", err)
	}
	if _, err := New(Spec{Name: "password", Options: map[string]string{"valeu": "x"}}, Env{}); err == nil {
		t.Error("misspelt option accepted")
	}
	s := Spec{Name: "password", Options: map[string]string{"value": "hunter2"}}
	if strings.Contains(s.String(), "hunter2") {
		t.Error("Spec.String shows the password")
	}
	s = Spec{Name: "sql", Options: map[string]string{"uri": "postgresql://xpra:hunter2@db/xpra"}}
	if got := s.String(); strings.Contains(got, "hunter2") || !strings.Contains(got, "xpra:xxxxx@db") {
		t.Errorf("Spec.String shows a database password: %s", got)
	}
}

func verifierFor(password string) func([]byte) bool {
	return func(pw []byte) bool { return string(pw) == password }
}

func TestSimpleModules(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("filepw"), 0o600)
	os.WriteFile(filepath.Join(dir, "ok.sh"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "no.sh"), []byte("#!/bin/sh\nexit 1\n"), 0o755)
	env := Env{Dir: dir, Getenv: func(k string) string {
		if k == "XPRA_PASSWORD" {
			return "envpw"
		}
		return ""
	}}
	for _, tc := range []struct {
		spec      string
		challenge bool
		good, bad string // passwords that pass / fail ("" = no verifier)
	}{
		{"allow", true, "anything", ""},
		{"none", false, "", ""},
		{"password,value=v1", true, "v1", "v2"},
		{"env", true, "envpw", "x"},
		{"file,filename=pw", true, "filepw", "filepw\n"},
		{"exec,command=ok.sh,timeout=5", false, "", ""},
	} {
		spec, _ := ParseSpec(tc.spec)
		m, err := New(spec, env)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if m.Challenge() != tc.challenge {
			t.Errorf("%s: challenge %v", tc.spec, m.Challenge())
		}
		req := Request{Username: "foo", Peer: "tcp 127.0.0.1:1"}
		if tc.challenge {
			req.Verify = verifierFor(tc.good)
		}
		id, err := m.Authenticate(req)
		if err != nil || id.Username != "foo" || id.Explicit {
			t.Errorf("%s: good login: %+v %v", tc.spec, id, err)
		}
		if tc.bad != "" {
			req.Verify = verifierFor(tc.bad)
			if _, err := m.Authenticate(req); !errors.Is(err, ErrAuthFailed) {
				t.Errorf("%s: bad password: %v", tc.spec, err)
			}
		}
	}
	for _, spec := range []string{"reject", "exec,command=no.sh"} {
		s, _ := ParseSpec(spec)
		m, _ := New(s, env)
		if _, err := m.Authenticate(Request{Username: "foo", Verify: verifierFor("x")}); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s: %v", spec, err)
		}
	}
	m, _ := New(Spec{Name: "fail"}, env)
	if _, err := m.Authenticate(Request{}); err == nil {
		t.Error("fail module passed")
	}
}

func TestMultifile(t *testing.T) {
	dir := t.TempDir()
	content := "# comment\n\nfoo|bar|1000|1000|:10,tcp://h:1/|A=1;B=2|compression=0\nmoo|cow\nfoo|second|0|0|:99\n"
	os.WriteFile(filepath.Join(dir, "users"), []byte(content), 0o600)
	m, err := New(Spec{Name: "multifile", Options: map[string]string{"filename": "users"}}, Env{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	id, err := m.Authenticate(Request{Username: "foo", Verify: verifierFor("bar")})
	if err != nil {
		t.Fatal(err)
	}
	if !id.Explicit || id.UID != "1000" || len(id.Displays) != 2 || id.Displays[1] != "tcp://h:1/" ||
		len(id.Env) != 2 || id.SessionOptions[0] != (Option{"compression", "0"}) {
		t.Errorf("foo: %+v", id)
	}
	if _, err := m.Authenticate(Request{Username: "foo", Verify: verifierFor("second")}); !errors.Is(err, ErrAuthFailed) {
		t.Error("duplicate user line used")
	}
	if id, err := m.Authenticate(Request{Username: "moo", Verify: verifierFor("cow")}); err != nil || len(id.Displays) != 0 {
		t.Errorf("moo: %+v %v", id, err)
	}
}

// The account a root proxy relays as: the module's uid/gid, else the
// password database entry of the username for local-account modules,
// else nobody.
func TestResolveAccount(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no nobody account")
	}
	nuid, _ := strconv.Atoi(nobody.Uid)
	for _, tc := range []struct {
		id   Identity
		uid  int
		root bool
	}{
		{Identity{Username: "foo", Explicit: true}, nuid, false},               // sqlite row without uid
		{Identity{Username: "root", Explicit: true}, nuid, false},              // a row's username is not an account
		{Identity{Username: "root"}, 0, true},                                  // allow/none: the account itself
		{Identity{Username: "no-such-user-xyz"}, nuid, false},                  // unknown account: nobody
		{Identity{Username: "x", UID: "nobody", GID: "nogroup"}, nuid, false},  // uid=/gid= options
		{Identity{Username: "x", UID: "0", GID: "0", Explicit: true}, 0, true}, // a row naming root
		{Identity{Username: "x", UID: nobody.Uid, GID: "nobody"}, nuid, false}, // Debian's missing group nobody
	} {
		a, err := ResolveAccount(&tc.id)
		if err != nil {
			t.Errorf("%+v: %v", tc.id, err)
			continue
		}
		if a.UID != tc.uid || a.Root() != tc.root || len(a.Groups) == 0 || a.Groups[0] != a.GID {
			t.Errorf("%+v: got %+v", tc.id, a)
		}
	}
	if _, err := ResolveAccount(&Identity{UID: "no-such-user-xyz"}); err == nil {
		t.Error("an unknown uid name resolved")
	}
}

// An xor challenge gives the password back to modules that need it; other
// digests never do.
func TestCleartext(t *testing.T) {
	ch, err := NewCleartextChallenge([]string{"hmac+sha256", "xor"}, []string{"hmac+sha256"})
	if err != nil || ch.Digest != DigestXOR {
		t.Fatalf("%v %+v", err, ch)
	}
	cs := Salt(32)
	combined, _ := Gen(ch.SaltDigest, cs, ch.ServerSalt)
	resp, _ := Gen(DigestXOR, []byte("s3cret"), combined)
	pw, ok := ch.Cleartext(resp, cs)
	if !ok || string(pw) != "s3cret" {
		t.Errorf("cleartext %q %v", pw, ok)
	}
	hm, _ := NewChallenge([]string{"hmac+sha256"}, []string{"hmac+sha256"}, false)
	if _, ok := hm.Cleartext(resp, cs); ok {
		t.Error("an hmac challenge gave a cleartext")
	}
	if _, err := NewCleartextChallenge([]string{"hmac+sha256"}, []string{"hmac+sha256"}); err == nil {
		t.Error("a client without xor was challenged with it")
	}
}
