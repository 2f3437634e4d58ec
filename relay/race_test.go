//go:build race

package relay

// raceEnabled: under the race detector sync.Pool drops a quarter of what
// is put back, on purpose, so allocation counts through a pool are not
// the program's.
const raceEnabled = true
