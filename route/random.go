package route

import "math/rand/v2"

// random spreads sessions evenly over time without any state.
type random struct{}

func (random) Order(m []Member) {
	rand.Shuffle(len(m), func(a, b int) { m[a], m[b] = m[b], m[a] })
}
