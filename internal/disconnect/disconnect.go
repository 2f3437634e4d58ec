// Package disconnect is why a connection ends before it relays: one error
// type for every failure a client is told about (like nats-server's one
// close reason), carrying xpra's words for the disconnect packet and the
// stage that failed, which is what logs and metrics count it as.
package disconnect

// Stage is where a connection failed.
type Stage uint8

const (
	// Session: no session for the user (routing, a refused new session).
	Session Stage = iota
	// Backend: the target could not be reached, started or logged in to.
	Backend
	// HandOff: a root proxy's worker could not take the connection.
	HandOff
)

var stageNames = [...]string{"session", "backend", "handoff"}

func (s Stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return "unknown"
}

// Error is a failure the client is told about: Reason and Message go into
// its xpra disconnect packet ("session not found error", "server error",
// "authentication failed", "version error", ...), Refused holds a server's
// own words when it refused, Err the cause for the log.
type Error struct {
	Stage   Stage
	Reason  string
	Message string
	Refused string
	Err     error
}

func (e *Error) Error() string {
	s := e.Stage.String() + ": " + e.Reason + ": " + e.Message
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether err is a disconnect.Error of stage st, and returns it.
func Is(err error, st Stage) (*Error, bool) {
	for err != nil {
		if e, ok := err.(*Error); ok && e.Stage == st {
			return e, true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, inner := range u.Unwrap() {
				if e, ok := Is(inner, st); ok {
					return e, true
				}
			}
			return nil, false
		default:
			return nil, false
		}
	}
	return nil, false
}
