// Package logsafe makes strings that a client chose (usernames, display
// names, reasons) safe to write into a log line: bounded in length and
// with every control or non-UTF-8 byte escaped, so that one connection
// cannot write megabytes into the log or forge lines of its own.
package logsafe

import (
	"strconv"
	"unicode/utf8"
)

// MaxLen is how many bytes of a client string reach a log line.
const MaxLen = 128

// String returns s quoted as Go does (control characters and invalid
// UTF-8 escaped) when it needs quoting, cut to MaxLen bytes with the
// original length noted.
func String(s string) string {
	cut := ""
	if len(s) > MaxLen {
		n := MaxLen
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		cut = "…(" + strconv.Itoa(len(s)) + " bytes)"
		s = s[:n]
	}
	if needsQuote(s) {
		s = strconv.Quote(s)
	}
	return s + cut
}

func needsQuote(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || r == '"' || r == '\\' {
			return true
		}
	}
	return false
}
