package route

import "strings"

// noDisplays is xpra's message for a user without any session.
const noDisplays = "no displays found"

// ChooseDisplay applies xpra's proxy rules to the candidate displays:
// the proxy's own display and ":proxy-*" instances are never candidates;
// a requested display must be one of them (xpra ≥ 6 also accepts "N" for
// ":N"); with no request there must be exactly one.
func ChooseDisplay(candidates []string, requested, own string) (string, error) {
	var list []string
	for _, d := range candidates {
		if d == "" || d == own || strings.HasPrefix(d, ":proxy-") {
			continue
		}
		list = append(list, d)
	}
	if len(list) == 0 {
		return "", notFound(noDisplays)
	}
	if requested != "" {
		if requested == own {
			return "", notFound("invalid display: proxy display")
		}
		for _, d := range list {
			if d == requested || d == ":"+requested {
				return d, nil
			}
		}
		// A URL cannot carry "tcp://h:p/" as its display, so also match
		// the same address written another way ("tcp:h:p").
		if rt, err := ParseTarget(requested); err == nil && rt.Address != "" {
			for _, d := range list {
				if t, err := ParseTarget(d); err == nil && t.Network == rt.Network && t.Address == rt.Address {
					return d, nil
				}
			}
		}
		return "", notFound("display '%s' not found", requested)
	}
	if len(list) > 1 {
		return "", notFound("please specify a display, more than one is available: %s", strings.Join(list, ", "))
	}
	return list[0], nil
}
