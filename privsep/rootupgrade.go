package privsep

// A root proxy's upgrade (docs/upgrade.md, "Step 2", root): the old main
// process asks each of its workers to hand over its relaying sessions;
// a worker sends each one ("live" with the client's socket, "live-server"
// with the server's) to the old main process, which forwards it over the
// upgrade's conduit with the worker's account and answers "live-answer";
// the new main process gives it to its own worker of that account
// ("resume", "resume-server"), under an id of its own numbering. A
// session anyone refuses goes back to the old worker and drains there.

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/loop"
)

// handoverTimeout bounds one worker's whole handover.
const handoverTimeout = 10 * time.Minute

// liveTimeout bounds the answer to one live session.
const liveTimeout = 30 * time.Second

// pendingLive is a live session's first message, until its server's.
type pendingLive struct {
	m      *message
	client *os.File
}

func (p *pendingLive) close() {
	if p != nil && p.client != nil {
		p.client.Close()
	}
}

// HandOver asks every live worker to hand its relaying sessions to
// forward (the upgrade's conduit) and returns how many went and how many
// stayed. Safe from any goroutine.
func (s *Supervisor) HandOver(forward func(authn.Account, *loop.HandedSession) error) (handed, kept int) {
	s.mu.Lock()
	s.forward = forward
	s.mu.Unlock()
	for _, w := range s.live() {
		r, err := w.requestFor(&message{Op: "handover"}, handoverTimeout)
		if err != nil {
			s.Log.Warn("upgrade: a worker did not hand its sessions over", "worker", w.pid, "err", err)
			continue
		}
		handed += r.Handed
		kept += r.Kept
	}
	return handed, kept
}

// forwardLive passes a worker's live session on and answers the worker;
// from the worker's reading goroutine.
func (s *Supervisor) forwardLive(w *worker0, p *pendingLive, server *os.File) {
	if p == nil {
		if server != nil {
			server.Close()
		}
		return
	}
	h, err := decodeLive(p.m.Live, p.client, server)
	if err == nil {
		s.mu.Lock()
		forward := s.forward
		s.mu.Unlock()
		if forward == nil {
			err = errors.New("no upgrade in progress")
		} else {
			err = forward(w.acct, h)
		}
		if err != nil {
			h.Close() // ours; the worker keeps its own and the session
		}
	}
	answer := &message{Op: "live-answer", Seq: p.m.Seq}
	if err != nil {
		answer.Err = err.Error()
	}
	if err := w.ch.send(answer, nil); err != nil {
		s.Log.Warn("upgrade: cannot answer a worker", "worker", w.pid, "err", err)
	}
}

// Resume gives a session handed over by the old process to the worker of
// acct, as session id. It owns h's files. Safe from any goroutine.
func (s *Supervisor) Resume(acct authn.Account, id uint64, h *loop.HandedSession) error {
	defer h.Close() // the worker gets its own copies
	if acct.Root() {
		return errors.New("privsep: a session of root")
	}
	l, err := encodeLive(h, nil)
	if err != nil {
		return err
	}
	w, err := s.workerFor(acct) // a session reserved on it
	if err != nil {
		return fmt.Errorf("privsep: start the worker: %w", err)
	}
	st := h.State
	s.mu.Lock()
	s.routes[id] = routed{w: w, lost: lostSession{user: st.User, peer: st.Peer, transport: st.Transport, link: st.Link, started: st.Started}}
	s.mu.Unlock()
	r, err := w.requestPair(&message{Op: "resume", ID: id, Live: l}, h.Client, &message{Op: "resume-server"}, h.Server, liveTimeout)
	if err == nil && !r.OK {
		err = errors.New(r.Err)
	}
	if err != nil {
		s.unroute(id)
		return fmt.Errorf("privsep: worker %d: %w", w.pid, err)
	}
	return nil
}

// requestFor is request with its own timeout.
func (w *worker0) requestFor(m *message, timeout time.Duration) (*message, error) {
	return w.requestPair(m, nil, nil, nil, timeout)
}

// requestPair sends m (with f) and, when m2 is set, m2 (with f2) right
// after it, and waits for the answer to m.
func (w *worker0) requestPair(m *message, f *os.File, m2 *message, f2 *os.File, timeout time.Duration) (*message, error) {
	m.Seq = w.seq.Add(1)
	c := make(chan *message, 1)
	w.pmu.Lock()
	w.pending[m.Seq] = c
	w.pmu.Unlock()
	defer func() {
		w.pmu.Lock()
		delete(w.pending, m.Seq)
		w.pmu.Unlock()
	}()
	var err error
	if m2 != nil {
		err = w.ch.sendPair(m, f, m2, f2)
	} else {
		err = w.ch.send(m, f)
	}
	if err != nil {
		return nil, err
	}
	select {
	case r := <-c:
		return r, nil
	case <-w.dead:
		return nil, errors.New("privsep: worker is gone")
	case <-time.After(timeout):
		return nil, errors.New("privsep: worker did not answer")
	}
}

// giveLive hands one of this worker's sessions to the main process and
// waits for its answer (loop.Server.HandOver's give).
func (w *worker) giveLive(h *loop.HandedSession) error {
	l, err := encodeLive(h, nil)
	if err != nil {
		return err
	}
	seq := w.liveSeq.Add(1)
	if err := w.ch.sendPair(&message{Op: "live", Seq: seq, Live: l}, h.Client, &message{Op: "live-server"}, h.Server); err != nil {
		return err
	}
	deadline := time.After(liveTimeout)
	for {
		select {
		case a := <-w.liveAnswers:
			if a.Seq != seq {
				continue // a late answer to an earlier one
			}
			if a.Err != "" {
				return errors.New(a.Err)
			}
			h.Close() // the new process has its own copies
			return nil
		case <-deadline:
			return errors.New("privsep: the main process did not answer")
		}
	}
}

// resume takes a session the new main process gives this worker: its
// server's socket is the next message.
func (w *worker) resume(m *message, client *os.File) {
	sm, server, err := w.ch.recv()
	if err != nil || sm.Op != "resume-server" {
		if server != nil {
			server.Close()
		}
		server = nil
	}
	h, err := decodeLive(m.Live, client, server)
	if err == nil {
		h.ID = m.ID
		err = w.srv.Resume(h)
	}
	answer := &message{OK: err == nil}
	if err != nil {
		answer.Err = err.Error()
		w.log.Warn("upgrade: cannot take a session over", "session", m.ID, "err", err)
	}
	w.reply(m, answer)
}
