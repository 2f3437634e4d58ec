package registry

import (
	"fmt"
	"sync"

	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

// Local is --max-user-sessions for one instance without a database: the
// same limit, counted in memory from reservation to the session's end.
type Local struct {
	Max int

	mu    sync.Mutex
	users map[string]int
	ids   map[uint64]string
}

// Reserve takes one of user's places for session id.
func (l *Local) Reserve(user string, id uint64, _ string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.users == nil {
		l.users, l.ids = map[string]int{}, map[uint64]string{}
	}
	if l.Max > 0 && l.users[user] >= l.Max {
		return &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error",
			Message: fmt.Sprintf("too many sessions: %d running, the limit is %d", l.users[user], l.Max)}
	}
	if _, ok := l.ids[id]; !ok {
		l.users[user]++
		l.ids[id] = user
	}
	return nil
}

// Release gives back session id's place.
func (l *Local) Release(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u, ok := l.ids[id]; ok {
		delete(l.ids, id)
		if l.users[u]--; l.users[u] <= 0 {
			delete(l.users, u)
		}
	}
}
