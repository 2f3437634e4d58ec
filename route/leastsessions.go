package route

import "slices"

// leastSessions sends a session to the member relaying the fewest now;
// ties keep the configured order, so an idle pool fills from its first
// member.
type leastSessions struct{}

func (leastSessions) Order(m []Member) {
	slices.SortStableFunc(m, func(a, b Member) int { return a.Sessions - b.Sessions })
}
