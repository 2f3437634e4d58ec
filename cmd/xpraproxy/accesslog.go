package main

// The proxy's log and its access log (docs/accesslog.md): --log-format
// chooses slog's text (logfmt) or JSON handler for the whole log; the
// sessions' access records (relay.AccessRecord, one "session ended" line
// each) are lines of that log, except when stderr is the journal
// (JOURNAL_STREAM names it, as systemd documents), where each record goes
// to journald with structured XPRAPROXY_* fields instead.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/xpraproxy/xpraproxy/relay"
)

// logFormats are --log-format's values.
var logFormats = []string{"text", "json"}

// newLogHandler is the handler for format on out: text (the default) or
// JSON. When out is stderr and stderr is the journal's stream, access
// records go to journald as structured entries (journalHandler).
func newLogHandler(format string, out io.Writer) (slog.Handler, error) {
	var h slog.Handler
	switch format {
	case "", "text":
		h = slog.NewTextHandler(out, nil)
	case "json":
		h = slog.NewJSONHandler(out, nil)
	default:
		return nil, fmt.Errorf("log format %q is not %s", format, strings.Join(logFormats, " or "))
	}
	if f, ok := out.(*os.File); ok && f == os.Stderr {
		if on, err := journal.StderrIsJournalStream(); err == nil && on && journal.Enabled() {
			h = &journalHandler{next: h, send: journal.Send}
		}
	}
	return h, nil
}

// newLogger is newLogHandler's logger.
func newLogger(format string, out io.Writer) (*slog.Logger, error) {
	h, err := newLogHandler(format, out)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// journalHandler sends access records to journald with one field per
// attribute (XPRAPROXY_USER, XPRAPROXY_CODE, ...) and a MESSAGE that
// reads as the text line; every other record, and an access record the
// journal refused, goes to next (the stream journald reads as plain
// lines).
type journalHandler struct {
	next  slog.Handler
	send  func(msg string, pri journal.Priority, vars map[string]string) error
	attrs []slog.Attr // from WithAttrs
}

func (j *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return j.next.Enabled(ctx, l)
}

func (j *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != relay.AccessMsg {
		return j.next.Handle(ctx, r)
	}
	attrs := append([]slog.Attr(nil), j.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	vars := make(map[string]string, len(attrs))
	for _, a := range attrs {
		vars[journalField(a.Key)] = a.Value.Resolve().String()
	}
	if err := j.send(r.Message+" "+logfmt(attrs), journal.PriInfo, vars); err != nil {
		return j.next.Handle(ctx, r)
	}
	return nil
}

func (j *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{next: j.next.WithAttrs(as), send: j.send, attrs: append(append([]slog.Attr(nil), j.attrs...), as...)}
}

// WithGroup is passed on; the journal's fields stay flat (the access
// record has no groups).
func (j *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{next: j.next.WithGroup(name), send: j.send, attrs: j.attrs}
}

// journalField is a journal field name for an attribute: upper case
// letters, digits and underscores, after the XPRAPROXY_ prefix.
func journalField(key string) string {
	var b strings.Builder
	b.WriteString("XPRAPROXY_")
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// logfmt is attrs as the text handler writes them, without time, level
// and message: the journal entry's MESSAGE.
func logfmt(attrs []slog.Attr) string {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
			return slog.Attr{}
		}
		return a
	}})
	var r slog.Record
	r.AddAttrs(attrs...)
	h.Handle(context.Background(), r)
	return strings.TrimSpace(buf.String())
}
