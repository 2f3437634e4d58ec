package logsafe

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice", "alice"},
		{"a\nb", `"a\nb"`},
		{"x\x1b[31m", `"x\x1b[31m"`},
		{"\xff", `"\xff"`},
		{`q"`, `"q\""`},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := strings.Repeat("é", 10<<20/2) // 10 MB of two-byte runes
	got := String(long)
	if len(got) > MaxLen+32 || !strings.HasSuffix(got, "(10485760 bytes)") {
		t.Errorf("10 MB username logged as %d bytes: %q", len(got), got[len(got)-40:])
	}
	if strings.Contains(got, "\ufffd") {
		t.Error("cut inside a rune")
	}
}
