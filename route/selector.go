package route

import (
	"fmt"
	"slices"
	"strings"
)

// Member is what a Selector sees of one live member of a pool.
type Member struct {
	Display  string // the member as configured
	Sessions int    // sessions this proxy relays to it now
	Index    int    // its place in the pool's configured list
}

// Selector is a pool's load-balancing policy: it orders the live members
// for one new session, the first tried first and the others when a
// connect fails. It runs under the pool's lock, so it must not block or
// do I/O; members is never empty.
type Selector interface {
	Order(members []Member)
}

// selectors is the registry of policies, one line each, as authn's
// modules: --pool=NAME:POLICY:... names one.
var selectors = map[string]func() Selector{
	"random":         func() Selector { return random{} },
	"least-sessions": func() Selector { return leastSessions{} },
	"first-live":     func() Selector { return firstLive{} },
}

// Policies lists the registered policies' names, sorted.
func Policies() []string {
	names := make([]string, 0, len(selectors))
	for n := range selectors {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// NewSelector returns the policy registered as name.
func NewSelector(name string) (Selector, error) {
	mk, ok := selectors[name]
	if !ok {
		return nil, fmt.Errorf("unknown policy %q (%s)", name, strings.Join(Policies(), ", "))
	}
	return mk(), nil
}
