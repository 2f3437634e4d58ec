package disconnect

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestIs(t *testing.T) {
	backend := &Error{Stage: Backend, Reason: "server error", Message: "backend socket error", Err: errors.New("EPIPE")}
	wrapped := fmt.Errorf("dialing: %w", backend)
	if e, ok := Is(wrapped, Backend); !ok || e != backend {
		t.Errorf("wrapped backend error not found: %v %v", e, ok)
	}
	if _, ok := Is(wrapped, Session); ok {
		t.Error("a backend error passed for a session one")
	}
	session := &Error{Stage: Session, Reason: "session not found error", Message: "no displays found"}
	if e, ok := Is(errors.Join(errors.New("x"), session), Session); !ok || e != session {
		t.Error("joined session error not found")
	}
	if _, ok := Is(errors.New("plain"), HandOff); ok {
		t.Error("a plain error passed")
	}
	if s := backend.Error(); !strings.Contains(s, "backend: server error: backend socket error: EPIPE") {
		t.Errorf("Error() = %q", s)
	}
	if !errors.Is(wrapped, backend.Err) {
		t.Error("Unwrap")
	}
	if (&Error{Stage: HandOff, Reason: "r", Message: "m"}).Error() != "handoff: r: m" {
		t.Error("an error without a cause")
	}
}
