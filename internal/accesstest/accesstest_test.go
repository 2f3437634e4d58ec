package accesstest

import (
	"bytes"
	"log/slog"
	"testing"
)

// Whatever slog's handlers write parses back to the same fields.
func TestParseRoundTrip(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		l, log := New(format)
		log.Info(Msg, "user", "a b\"c\n", "n", 3, "ok", true, "empty", "", "eq", "x=y")
		lines, err := Parse(l.Bytes(), format)
		if err != nil {
			t.Fatal(err)
		}
		recs := Records(lines)
		if len(recs) != 1 {
			t.Fatalf("%s: %d records", format, len(recs))
		}
		r := recs[0]
		for k, want := range map[string]string{"user": "a b\"c\n", "n": "3", "ok": "true", "empty": "", "eq": "x=y", "level": "INFO"} {
			if r[k] != want {
				t.Errorf("%s: %s = %q, want %q", format, k, r[k], want)
			}
		}
	}
}

// FuzzParseText: the text parser never panics, and a line it accepts
// written again by slog parses to the same fields.
func FuzzParseText(f *testing.F) {
	f.Add(`time=2026-12-02T21:00:00Z level=INFO msg="session ended" user=alice code=CR`)
	f.Add(`a="b\"c" d=`)
	f.Add(`="x"`)
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseText(s)
		if err != nil {
			return
		}
		for _, k := range []string{slog.TimeKey, slog.LevelKey, slog.MessageKey} {
			delete(l, k) // the handler's own
		}
		var buf bytes.Buffer
		h := slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
				return slog.Attr{}
			}
			return a
		}})
		log := slog.New(h)
		var args []any
		for k, v := range l {
			args = append(args, k, v)
		}
		log.Info("", args...)
		again, err := ParseText(buf.String())
		if err != nil {
			// slog writes keys as they are; a key the parser accepted
			// but slog quotes (none should be) would land here.
			t.Fatalf("slog's line %q does not parse: %v", buf.String(), err)
		}
		for k, v := range l {
			if again[k] != v {
				t.Fatalf("%s: %q became %q", k, v, again[k])
			}
		}
	})
}
