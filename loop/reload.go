package loop

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
)

// ReloadResult says what a reload changed, by listener URL.
type ReloadResult struct {
	Kept, Added, Removed []string
}

// Reload makes ls the server's listeners (docs/reload.md): a listener
// whose network and address are already served keeps its socket and gets
// the new settings for its next connection; new ones are bound and
// served; the others stop accepting (connections they accepted go on).
// Nothing changes when a new listener cannot be bound. Safe from any
// goroutine but a loop, once Ready; reloads run one at a time.
func (s *Server) Reload(ls []Listener) (ReloadResult, error) {
	var res ReloadResult
	select {
	case <-s.up:
	default:
		return res, errors.New("loop: reload before the server is serving")
	}
	if s.stopping.Load() {
		return res, errors.New("loop: the server is stopping")
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.handedOver.Load() {
		return res, errors.New("loop: the listeners were handed to a new process")
	}
	s.mu.Lock()
	old := map[string]*slot{}
	for _, sl := range s.slots {
		old[sl.cur.Load().key()] = sl
	}
	s.mu.Unlock()

	next := make([]Listener, len(ls))
	copy(next, ls)
	var fresh []Listener
	seen := map[string]bool{}
	for i := range next {
		l := &next[i]
		if seen[l.key()] {
			return res, fmt.Errorf("loop: %s is listed twice", l.url())
		}
		seen[l.key()] = true
		l.prepare()
		if old[l.key()] == nil {
			fresh = append(fresh, *l)
		}
	}
	added, err := s.bind(fresh)
	if err != nil {
		return res, fmt.Errorf("loop: reload refused: %w", err)
	}

	var slots []*slot
	for i := range next {
		l := &next[i]
		if sl := old[l.key()]; sl != nil {
			sl.cur.Store(l)
			slots = append(slots, sl)
			res.Kept = append(res.Kept, l.url())
			delete(old, l.key())
		}
	}
	slots = append(slots, added...)
	for _, sl := range added {
		res.Added = append(res.Added, sl.cur.Load().url())
	}
	s.mu.Lock()
	s.slots = slots
	s.mu.Unlock()
	if s.stopping.Load() {
		// Stop ran meanwhile and closed the slots it saw.
		for _, sl := range added {
			sl.ln.Close()
		}
	}
	for _, sl := range added {
		go s.acceptLoop(sl)
	}
	for _, sl := range old {
		res.Removed = append(res.Removed, sl.cur.Load().url())
		sl.ln.Close()
	}
	return res, nil
}

// Listeners are the listeners served now, each as its latest settings.
// Safe from any goroutine.
func (s *Server) Listeners() []Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Listener, len(s.slots))
	for i, sl := range s.slots {
		out[i] = *sl.cur.Load()
	}
	return out
}

// ListenerFile is a listening socket as a file, for a successor process.
type ListenerFile struct {
	Network, Address, Kind string
	File                   *os.File // a dup: the caller closes it
}

// ListenerFiles dups every listening socket (an upgrade hands them
// over). Safe from any goroutine.
func (s *Server) ListenerFiles() ([]ListenerFile, error) {
	s.mu.Lock()
	slots := slices.Clone(s.slots)
	s.mu.Unlock()
	var out []ListenerFile
	for _, sl := range slots {
		fl, ok := sl.ln.(interface{ File() (*os.File, error) })
		if !ok {
			continue
		}
		f, err := fl.File()
		if err != nil {
			for _, o := range out {
				o.File.Close()
			}
			return nil, fmt.Errorf("loop: %s: %w", sl.cur.Load().url(), err)
		}
		l := sl.cur.Load()
		out = append(out, ListenerFile{Network: l.Network, Address: l.Address, Kind: l.Kind, File: f})
	}
	return out, nil
}

// StopAccepting closes this process's listening sockets without
// unlinking unix ones (a successor serves them now); sessions and logins
// in progress go on. Reload is refused from then on. Safe from any
// goroutine.
func (s *Server) StopAccepting() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.handedOver.Store(true)
	s.mu.Lock()
	slots := s.slots
	s.slots = nil
	s.mu.Unlock()
	for _, sl := range slots {
		if ul, ok := sl.ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
		sl.ln.Close()
	}
}
