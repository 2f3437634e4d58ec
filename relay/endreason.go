package relay

// Why a session ended, as one typed value (docs/accesslog.md): set where
// the session decides to end, never parsed back from a disconnect string,
// as nats-server's ClosedState. The access log prints it as HAProxy's
// termination state does: who ended the session, and in which phase.

// CloseReason is why a session ended. The zero value means the session
// has not ended (or ended before any reason was recorded, which the
// access record reports as client-gone).
type CloseReason uint8

const (
	CloseNone CloseReason = iota
	// The client.
	CloseClientGone   // the client's connection closed
	CloseClientError  // the client broke the protocol (bad or unexpected packet, framing, not xpra)
	CloseRequest      // a one-shot request (version, info, id, stop) was answered
	CloseLoginTimeout // the client did not finish logging in in time
	CloseAuthFailed   // wrong password, unknown user, no usable challenge response
	// The server.
	CloseServerGone  // the backend's connection closed
	CloseServerError // the backend broke the protocol or refused the relay
	CloseUnreachable // the target could not be connected to or logged in to
	// The proxy: limits, policy, its own failures.
	CloseNoTarget    // the user has no session to go to (none found, not allowed)
	CloseThrottled   // too many failed logins from this address or user
	CloseAuthError   // an authentication module or its database failed
	CloseIdleTimeout // nothing relayed for --idle-timeout
	CloseTooSlow     // a peer stopped reading (stall) or the session's buffer limit
	CloseShed        // the proxy's global buffer budget: the largest holder goes
	CloseEvicted     // a newer connection took its place under the pre-login cap
	CloseBusy        // the proxy's work queue was full
	CloseBridgeError // a packet could not be translated between xpra generations
	CloseInternal    // the proxy's own failure (a panic, an encoding or handoff error)
	CloseDenied      // a request not allowed from this connection
	// The local operator.
	CloseStopped  // xpraproxy stop of this one connection
	CloseShutdown // the proxy is stopping
	// An upgrade: the old process ends the sessions it still relays at
	// --upgrade-drain-timeout (docs/upgrade.md).
	CloseUpgradeDrain
)

// closeInfo is a reason's fixed description.
type closeInfo struct {
	name string
	who  byte // C client, S server, P proxy, L local operator, U upgrade
}

var closeInfos = [...]closeInfo{
	CloseNone:         {"none", '-'},
	CloseClientGone:   {"client-gone", 'C'},
	CloseClientError:  {"client-error", 'C'},
	CloseRequest:      {"request", 'C'},
	CloseLoginTimeout: {"login-timeout", 'C'},
	CloseAuthFailed:   {"auth-failed", 'C'},
	CloseServerGone:   {"server-gone", 'S'},
	CloseServerError:  {"server-error", 'S'},
	CloseUnreachable:  {"unreachable", 'S'},
	CloseNoTarget:     {"no-target", 'P'},
	CloseThrottled:    {"throttled", 'P'},
	CloseAuthError:    {"auth-error", 'P'},
	CloseIdleTimeout:  {"idle-timeout", 'P'},
	CloseTooSlow:      {"too-slow", 'P'},
	CloseShed:         {"shed", 'P'},
	CloseEvicted:      {"evicted", 'P'},
	CloseBusy:         {"busy", 'P'},
	CloseBridgeError:  {"bridge-error", 'P'},
	CloseInternal:     {"internal", 'P'},
	CloseDenied:       {"denied", 'P'},
	CloseStopped:      {"stopped", 'L'},
	CloseShutdown:     {"shutdown", 'L'},
	CloseUpgradeDrain: {"upgrade-drain", 'U'},
}

// CloseReasons lists every reason, for the documentation's table and
// its test.
func CloseReasons() []CloseReason {
	rs := make([]CloseReason, 0, len(closeInfos)-1)
	for r := CloseClientGone; int(r) < len(closeInfos); r++ {
		rs = append(rs, r)
	}
	return rs
}

// CloseReasonNamed is the reason whose String is name.
func CloseReasonNamed(name string) (CloseReason, bool) {
	for i, ci := range closeInfos {
		if ci.name == name && i != int(CloseNone) {
			return CloseReason(i), true
		}
	}
	return CloseNone, false
}

func (r CloseReason) info() closeInfo {
	if int(r) < len(closeInfos) {
		return closeInfos[r]
	}
	return closeInfo{"unknown", '-'}
}

// String is the reason's stable name in the access log ("client-gone").
func (r CloseReason) String() string { return r.info().name }

// Who is the first letter of the termination code: C client, S server,
// P proxy, L local operator, U upgrade.
func (r CloseReason) Who() byte { return r.info().who }

// Phase is where a session was when it ended: the second letter of the
// termination code.
type Phase byte

const (
	PhaseHello   Phase = 'H' // before or at the hello
	PhaseAuth    Phase = 'A' // the hello was read: challenge, authentication modules
	PhaseTarget  Phase = 'T' // logged in: finding, starting or connecting the target
	PhaseRelay   Phase = 'R' // relaying
	PhaseClosing Phase = 'D' // already closing or draining
)

// phase is the session's phase now.
func (s *Session) phase() Phase {
	switch {
	case s.state == stateClosing || s.state == stateClosed:
		return PhaseClosing
	case s.state == stateRelay:
		return PhaseRelay
	case s.authed:
		return PhaseTarget
	case s.state == stateChallenge || s.state == stateBusy || s.module > 0:
		// A round of authentication has begun: a challenge sent or a
		// module deciding. A hello refused as it came (a version, a
		// username, the throttle, a request answered) ends at H.
		return PhaseAuth
	}
	return PhaseHello
}

// bridgeError is a failure to translate a packet between xpra
// generations: the session ends with CloseBridgeError. Its text is the
// translator's own.
type bridgeError struct{ err error }

func (e bridgeError) Error() string { return e.err.Error() }
func (e bridgeError) Unwrap() error { return e.err }
