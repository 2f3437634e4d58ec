package main

// Configuration files in xpra's syntax (docs/config.md). The reading rules
// are those of read_config() in xpra/scripts/config.py, which are the same
// in 3.1.3 and 6.5.5:
//
//   - lines end at \n, \r\n or \r (Python's universal newlines);
//   - each line is trimmed; an empty line, or one whose first character is
//     '#' or '!', is skipped, even in the middle of a continued line;
//   - a line ending with '\' continues on the next kept line: the
//     backslash becomes a space;
//   - "key = value" splits at the first '='; key and value are trimmed;
//     there is no quoting: quotes, backslashes and '#' inside a value are
//     part of it;
//   - a key given again in the same file adds a value (a list), except
//     that a first value that is empty is replaced by the next one.
//
// One difference, on purpose: xpra skips a line without '=' (or starting
// with it) silently; here it is an error with the file and line, because
// a line the operator wrote and the proxy dropped is a configuration
// nobody can see.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	_ "embed"
)

// A conf file is operator input, but the proxy still bounds what it reads:
// a mistaken --config=/dev/zero or a runaway generated file fails with a
// reason instead of eating memory.
const (
	maxConfSize  = 1 << 20  // bytes in one file
	maxConfLine  = 64 << 10 // bytes in one line, continued lines joined
	maxConfFiles = 256      // files in one conf.d
)

// confEntry is one "key = value" of a conf file; line is the line it
// starts on (a continued entry counts from its first line).
type confEntry struct {
	key, value string
	line       int
}

// pySpace is Python's str.isspace, which strip() uses: Go's unicode.IsSpace
// plus the four ASCII separators 0x1c-0x1f.
func pySpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// parseConf reads one conf file's bytes; name is how errors name the file.
// The entries keep the file's order.
func parseConf(name string, data []byte) ([]confEntry, error) {
	if len(data) > maxConfSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxConfSize)
	}
	type kept struct {
		text string
		line int
	}
	var lines []kept
	no := 0
	for rest := string(data); rest != ""; {
		raw := rest
		rest = ""
		if i := strings.IndexAny(raw, "\r\n"); i >= 0 {
			end := i + 1
			if raw[i] == '\r' && end < len(raw) && raw[end] == '\n' {
				end++
			}
			raw, rest = raw[:i], raw[end:]
		}
		no++
		if len(raw) > maxConfLine {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, no, maxConfLine)
		}
		if !utf8.ValidString(raw) {
			return nil, fmt.Errorf("%s:%d: not UTF-8", name, no)
		}
		s := strings.TrimFunc(raw, pySpace)
		if s == "" || s[0] == '#' || s[0] == '!' {
			continue
		}
		lines = append(lines, kept{s, no})
	}

	var (
		entries []confEntry
		dropped []bool
		// per key: how many values so far, and where the first one is.
		count = map[string]int{}
		first = map[string]int{}
	)
	add := func(s string, line int) error {
		i := strings.IndexByte(s, '=')
		if i <= 0 {
			return fmt.Errorf("%s:%d: not key = value", name, line)
		}
		key, value := strings.TrimFunc(s[:i], pySpace), strings.TrimFunc(s[i+1:], pySpace)
		if key == "" { // "" then "= x": xpra reads a key "" that no option has
			return fmt.Errorf("%s:%d: not key = value", name, line)
		}
		// xpra: `if current_value:` — an empty single value is replaced.
		if count[key] == 1 && entries[first[key]].value == "" {
			dropped[first[key]] = true
			count[key] = 0
		}
		if count[key] == 0 {
			first[key] = len(entries)
		}
		count[key]++
		entries = append(entries, confEntry{key: key, value: value, line: line})
		dropped = append(dropped, false)
		return nil
	}
	var cont strings.Builder
	start := 0
	for _, l := range lines {
		if cont.Len() == 0 {
			start = l.line
		}
		if cont.Len()+len(l.text)+1 > maxConfLine {
			return nil, fmt.Errorf("%s:%d: continued line longer than %d bytes", name, start, maxConfLine)
		}
		if strings.HasSuffix(l.text, `\`) {
			cont.WriteString(l.text[:len(l.text)-1] + " ")
			continue
		}
		cont.WriteString(l.text)
		if err := add(cont.String(), start); err != nil {
			return nil, err
		}
		cont.Reset()
	}
	if cont.Len() > 0 { // the last line ended with a backslash
		if err := add(cont.String(), start); err != nil {
			return nil, err
		}
	}
	out := entries[:0]
	for i, e := range entries {
		if !dropped[i] {
			out = append(out, e)
		}
	}
	return out, nil
}

// readConfFile reads and parses one file, reading at most one byte more
// than a conf file may hold whatever the path names.
func readConfFile(path string) ([]confEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return parseConf(path, data)
}

// confDirFiles lists a configuration directory's files in reading order,
// as xpra 6.x reads /etc/xpra: the first of mains that exists, then
// conf.d/*.conf sorted by name (regular files; names starting with '.' are
// skipped, as Python's glob skips them). A missing directory has none.
func confDirFiles(dir string, mains ...string) ([]string, error) {
	var files []string
	for _, m := range mains {
		p := filepath.Join(dir, m)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			files = append(files, p)
			break
		} else if err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	d := filepath.Join(dir, "conf.d")
	ents, err := os.ReadDir(d)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return files, nil
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".conf") {
			continue
		}
		if fi, err := os.Stat(filepath.Join(d, n)); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		names = append(names, n)
	}
	if len(names) > maxConfFiles {
		return nil, fmt.Errorf("config: %s has %d .conf files, more than %d", d, len(names), maxConfFiles)
	}
	sort.Strings(names)
	for _, n := range names {
		files = append(files, filepath.Join(d, n))
	}
	return files, nil
}

// configFiles are the files one --config=PATH names: the file itself, or
// for a directory (--config=/etc/xpra) its xpraproxy.conf or xpra.conf and
// its conf.d, the way xpra reads its own directory.
func configFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	files, err := confDirFiles(path, "xpraproxy.conf", "xpra.conf")
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("--config=%s: no xpraproxy.conf, xpra.conf or conf.d/*.conf in it", path)
	}
	return files, err
}

// defaultConfDir is the system configuration directory; XPRAPROXY_CONF_DIR
// replaces it (tests, packages installed elsewhere).
const defaultConfDir = "/etc/xpraproxy"

func systemConfDir(getenv func(string) string) string {
	if d := getenv("XPRAPROXY_CONF_DIR"); d != "" {
		return d
	}
	return defaultConfDir
}

//go:generate sh gen_xpraoptions.sh
//go:embed xpraoptions.txt
var xpraOptionsData string

// xpraOptionNames are the keys xpra's own conf files may hold, each with
// the xpra versions that have it (xpraoptions.txt, made from the installed
// xpras' OPTION_TYPES by gen_xpraoptions.sh).
func xpraOptionNames() map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(xpraOptionsData, "\n") {
		if k, v, ok := strings.Cut(l, "\t"); ok && !strings.HasPrefix(l, "#") {
			m[k] = v
		}
	}
	return m
}

// nearestOption is the name closest to key by edit distance (the first in
// names on a tie), for "did you mean"; keys are cut to 64 runes so that a
// long garbage key costs little.
func nearestOption(key string, names []string) string {
	k := []rune(key)
	if len(k) > 64 {
		k = k[:64]
	}
	best, bestD := "", -1
	for _, n := range names {
		if d := editDistance(k, []rune(n)); bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is Levenshtein's distance (insert, delete, substitute).
func editDistance(a, b []rune) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
