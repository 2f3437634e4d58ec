// Package accesstest reads the proxy's access log back in tests: a log
// in slog's text (logfmt) or JSON format, and the "session ended" lines
// in it as field maps (docs/accesslog.md), so that tests assert fields,
// not substrings.
package accesstest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// Msg is the access record's message (relay.AccessMsg; repeated here so
// that this package imports nothing of the proxy's).
const Msg = "session ended"

// Line is one log line's fields, every value as text.
type Line map[string]string

// ParseText parses one line of slog's text handler: key=value pairs
// separated by spaces, a value quoted as Go quotes strings when it needs
// to be.
func ParseText(s string) (Line, error) {
	l := Line{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || !plainKey(s[:eq]) {
			return nil, fmt.Errorf("accesstest: no key=value at %q", s)
		}
		key := s[:eq]
		s = s[eq+1:]
		var v string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("accesstest: %s: %w", key, err)
			}
			if v, err = strconv.Unquote(q); err != nil {
				return nil, fmt.Errorf("accesstest: %s: %w", key, err)
			}
			s = s[len(q):]
			if s != "" && s[0] != ' ' {
				return nil, fmt.Errorf("accesstest: %s: junk after the quoted value", key)
			}
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			v, s = s[:end], s[end:]
		}
		if _, dup := l[key]; dup {
			return nil, fmt.Errorf("accesstest: %s twice", key)
		}
		l[key] = v
	}
	return l, nil
}

// plainKey: a key slog writes without quotes.
func plainKey(k string) bool {
	for _, r := range k {
		if r == utf8.RuneError || r <= ' ' || r == '=' || r == '"' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// ParseJSON parses one line of slog's JSON handler (a flat object).
func ParseJSON(s string) (Line, error) {
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("accesstest: %w", err)
	}
	l := Line{}
	for k, v := range m {
		switch v := v.(type) {
		case string:
			l[k] = v
		case json.Number:
			l[k] = v.String()
		case bool:
			l[k] = strconv.FormatBool(v)
		case nil:
			l[k] = ""
		default:
			return nil, fmt.Errorf("accesstest: %s is a %T, not flat", k, v)
		}
	}
	return l, nil
}

// Parse parses a whole log in format ("text" or "json"); every line must
// parse.
func Parse(log []byte, format string) ([]Line, error) {
	var out []Line
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var (
			l   Line
			err error
		)
		if format == "json" {
			l, err = ParseJSON(sc.Text())
		} else {
			l, err = ParseText(sc.Text())
		}
		if err != nil {
			return nil, fmt.Errorf("%w in line %q", err, sc.Text())
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// Records are the access lines of lines.
func Records(lines []Line) []Line {
	var out []Line
	for _, l := range lines {
		if l["msg"] == Msg {
			out = append(out, l)
		}
	}
	return out
}

// Log is a log a test writes with slog and reads back. Safe for
// concurrent use.
type Log struct {
	Format string
	mu     sync.Mutex
	buf    bytes.Buffer
}

// New is a Log in format and the logger that writes it.
func New(format string) (*Log, *slog.Logger) {
	l := &Log{Format: format}
	var h slog.Handler = slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})
	if format == "json" {
		h = slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return l, slog.New(h)
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Bytes is what was logged so far.
func (l *Log) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes())
}

// ErrTimeout: fewer access records than awaited.
var ErrTimeout = errors.New("accesstest: not enough access records")

// Wait returns the access records once there are at least n, failing
// the test after timeout (or on a line that does not parse).
func (l *Log) Wait(t testing.TB, n int, timeout time.Duration) []Line {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lines, err := Parse(l.Bytes(), l.Format)
		if err != nil {
			t.Fatal(err)
		}
		if recs := Records(lines); len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: want %d, log:\n%s", ErrTimeout, n, l.Bytes())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ io.Writer = (*Log)(nil)
