package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// confSyntaxCases are conf files and what read_config() makes of them,
// as xpra's dict: a string, or a list for a key given more than once.
var confSyntaxCases = []struct {
	name, text string
	want       map[string]any
}{
	{"plain", "a = b\n", map[string]any{"a": "b"}},
	{"trimmed", "  a \t=   b c  \t\n", map[string]any{"a": "b c"}},
	{"comments", "# c\n! c\n   # indented\n\n\na=1\n", map[string]any{"a": "1"}},
	{"continued", "a = b \\\n   c\n", map[string]any{"a": "b  c"}},
	{"continued over comments and blank lines", "a = b\\\n# x\n\n  c\n", map[string]any{"a": "b c"}},
	{"backslash at the end of the file", "a = b\\", map[string]any{"a": "b"}},
	{"a value ending with a backslash, at the end of the file", "0=\\\\", map[string]any{"0": "\\"}},
	{"key continued", "a\\\n= b\n", map[string]any{"a": "b"}},
	{"repeated", "a = 1\na = 2\na = 3\n", map[string]any{"a": []any{"1", "2", "3"}}},
	{"empty first value replaced", "a =\na = 2\n", map[string]any{"a": "2"}},
	{"empty values replaced", "a =\na =\na = x\n", map[string]any{"a": "x"}},
	{"empty later value kept", "a = 1\na =\n", map[string]any{"a": []any{"1", ""}}},
	{"no quoting", "a = \"x y\" # not a comment\nb = 'z'\\n\n", map[string]any{"a": "\"x y\" # not a comment", "b": "'z'\\n"}},
	{"equals in value", "a = b=c=d\n", map[string]any{"a": "b=c=d"}},
	{"crlf", "a = 1\r\nb = 2\r\n", map[string]any{"a": "1", "b": "2"}},
	{"cr", "a = 1\rb = 2\r", map[string]any{"a": "1", "b": "2"}},
	{"python whitespace", "\x0b a = b \x1c\x1f\n", map[string]any{"a": "b"}},
	{"key with a space", "a b = c\n", map[string]any{"a b": "c"}},
	{"backslash inside", "a = x\\y\n", map[string]any{"a": "x\\y"}},
	{"hash value", "start-env = #overlay:GTK=0\n", map[string]any{"start-env": "#overlay:GTK=0"}},
	{"empty", "", map[string]any{}},
}

// asDict is what xpra's read_config returns for entries.
func asDict(entries []confEntry) map[string]any {
	d := map[string]any{}
	for _, e := range entries {
		switch cur := d[e.key].(type) {
		case nil:
			d[e.key] = e.value
		case string:
			d[e.key] = []any{cur, e.value}
		case []any:
			d[e.key] = append(cur, e.value)
		}
	}
	return d
}

func TestParseConf(t *testing.T) {
	for _, c := range confSyntaxCases {
		entries, err := parseConf("x.conf", []byte(c.text))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := asDict(entries); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %q gives %#v, want %#v", c.name, c.text, got, c.want)
		}
	}
	// Line numbers: a continued entry counts from its first line.
	entries, _ := parseConf("x.conf", []byte("# 1\n\na = 1\nb = 2 \\\n\\\n 3\nc = 4\n"))
	var lines []int
	for _, e := range entries {
		lines = append(lines, e.line)
	}
	if !reflect.DeepEqual(lines, []int{3, 4, 7}) {
		t.Errorf("lines %v, want [3 4 7]", lines)
	}
	for _, bad := range []struct{ text, want string }{
		{"a = 1\nbind-tcp 0.0.0.0:1\n", "x.conf:2: not key = value"},
		{"= x\n", "x.conf:1: not key = value"},
		{"\\\n= x\n", "x.conf:1: not key = value"},
		{"a = \xff\n", "x.conf:1: not UTF-8"},
		{"a = " + strings.Repeat("x", maxConfLine) + "\n", "x.conf:1: line longer"},
		{strings.Repeat("a = "+strings.Repeat("x", 1000)+"\\\n", 70), "x.conf:1: continued line longer"},
		{strings.Repeat("a = 1\n", maxConfSize/6+1), "larger than"},
	} {
		if _, err := parseConf("x.conf", []byte(bad.text)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%.40q: %v, want %q", bad.text, err, bad.want)
		}
	}
}

// xpraSites are the python paths of the installed xpras, Debian's 3.1.3
// ("") and the 6.x build, with their etc/xpra; none when not installed.
func xpraSites(t *testing.T) map[string]string {
	sites := map[string]string{}
	if exec.Command("/usr/bin/python3", "-I", "-c", "import xpra.scripts.config").Run() == nil {
		sites[""] = "/etc/xpra"
	}
	six := os.Getenv("XPRAPROXY_XPRA6")
	if six == "" {
		m, _ := filepath.Glob("/var/cache/xpraproxy/xpra-6.*/xpra6")
		if len(m) > 0 {
			six = m[len(m)-1]
		}
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(six), "local/lib/python3*/dist-packages")); six != "" && len(m) > 0 {
		sites[m[0]] = filepath.Join(filepath.Dir(six), "etc/xpra")
	}
	if len(sites) == 0 {
		t.Skip("no xpra installed (./test.sh installs both)")
	}
	return sites
}

// The parser reads every case, and every file of both xpras' own
// configuration, exactly as each xpra's read_config() does.
func TestParseConfLikeXpra(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i, c := range confSyntaxCases {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".conf")
		if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
			t.Fatal(i, err)
		}
		files = append(files, p)
	}
	for site, etc := range xpraSites(t) {
		all := append([]string(nil), files...)
		real, _ := filepath.Glob(filepath.Join(etc, "conf.d/*.conf"))
		all = append(all, append(real, filepath.Join(etc, "xpra.conf"))...)
		args := []string{"-I"}
		if site != "" {
			args = []string{"-s"}
		}
		cmd := exec.Command("/usr/bin/python3", append(args, "-c", `import json, sys
from xpra.scripts.config import read_config
print(json.dumps([read_config(p) for p in sys.argv[1:]]))`)...)
		cmd.Args = append(cmd.Args, all...)
		cmd.Env = append(os.Environ(), "PYTHONPATH="+site)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("xpra's read_config (%s): %v", etc, err)
		}
		var want []map[string]any
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatal(err)
		}
		for i, f := range all {
			entries, err := readConfFile(f)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if got := asDict(entries); !reflect.DeepEqual(got, want[i]) {
				t.Errorf("%s (xpra of %s): we read\n%#v\nxpra reads\n%#v", f, etc, got, want[i])
			}
		}
		if len(real) < 10 {
			t.Errorf("%s has %d conf.d files", etc, len(real))
		}
	}
}

// The committed list of xpra's keys is what the script makes from the
// installed xpras.
func TestXpraOptionsData(t *testing.T) {
	sites := xpraSites(t)
	six := ""
	for site := range sites {
		if site != "" {
			six = filepath.Join(site, "../../../../xpra6")
		}
	}
	if len(sites) < 2 {
		t.Skip("needs both xpras")
	}
	out := filepath.Join(t.TempDir(), "x.txt")
	cmd := exec.Command("sh", "gen_xpraoptions.sh", out)
	cmd.Env = append(os.Environ(), "XPRAPROXY_XPRA6="+six)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	b, _ := os.ReadFile(out)
	if string(b) != xpraOptionsData {
		t.Errorf("xpraoptions.txt is not what gen_xpraoptions.sh makes now: run go generate ./cmd/xpraproxy")
	}
	names := xpraOptionNames()
	for k, v := range map[string]string{"clipboard": "3.1.3 6.5.5", "bind-udp": "3.1.3", "audio": "6.5.5", "compression_level": "3.1.3 6.5.5"} {
		if names[k] != v {
			t.Errorf("%s: %q, want %q", k, names[k], v)
		}
	}
}

func FuzzConfFile(f *testing.F) {
	for _, c := range confSyntaxCases {
		f.Add([]byte(c.text))
	}
	f.Add([]byte("a = 1\nbind-tcp 0.0.0.0:1\n"))
	f.Add([]byte("a\\\n\\\n\\"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseConf("f", data)
		if len(data) > maxConfSize && err == nil {
			t.Fatalf("%d bytes accepted", len(data))
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		lines := bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) + 1
		var again bytes.Buffer
		for _, e := range entries {
			if e.key == "" || strings.ContainsAny(e.key, "=\r\n") || strings.ContainsAny(e.value, "\r\n") ||
				strings.TrimFunc(e.key, pySpace) != e.key || strings.TrimFunc(e.value, pySpace) != e.value ||
				e.key[0] == '#' || e.key[0] == '!' || !utf8.ValidString(e.value) {
				t.Fatalf("entry %+v from %q", e, data)
			}
			if e.line < 1 || e.line > lines || len(e.key)+len(e.value) > maxConfLine {
				t.Fatalf("entry %+v: line out of range or too long", e)
			}
		}
		// What the parser returns, written back, reads the same. A value
		// ending with a backslash (only a file's last line can give one)
		// cannot be written on a line of its own: it is left out.
		var kept []confEntry
		for _, e := range entries {
			if !strings.HasSuffix(e.value, `\`) {
				kept = append(kept, e)
				again.WriteString(e.key + "=" + e.value + "\n")
			}
		}
		back, err := parseConf("f", again.Bytes())
		if err != nil {
			t.Fatalf("written back: %v\n%q", err, again.Bytes())
		}
		if !reflect.DeepEqual(asDict(back), asDict(kept)) {
			t.Fatalf("written back: %v\nfirst: %v", back, entries)
		}
	})
}
