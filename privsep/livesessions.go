package privsep

// Live sessions over an upgrade's conduit (docs/upgrade.md, "Step 2"):
// after the successor said ready, the old process sends each relaying
// session it can hand over as a "session" message (the state, the bytes
// read and not consumed, the WebSocket frame state; the client's socket)
// and a "session-server" message (the server's socket); the successor
// answers "adopted" or "refused" (with why) to each, and "sessions-done"
// ends the exchange.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
)

// liveSession is a loop.HandedSession on the wire, its state in the
// bounded form relay.DecodeState reads.
type liveSession struct {
	State       json.RawMessage `json:"state"`
	ClientBytes []byte          `json:"client_bytes,omitempty"`
	ServerBytes []byte          `json:"server_bytes,omitempty"`
	WS          *loop.WSState   `json:"ws,omitempty"`
	// Account is the worker account a root proxy's session relays as.
	Account *authn.Account `json:"account,omitempty"`
}

// encodeLive is h on the wire.
func encodeLive(h *loop.HandedSession, acct *authn.Account) (*liveSession, error) {
	st, err := h.State.Encode()
	if err != nil {
		return nil, err
	}
	return &liveSession{State: st, ClientBytes: h.ClientBytes, ServerBytes: h.ServerBytes, WS: h.WS, Account: acct}, nil
}

// decodeLive is the session of l with its two sockets; it closes them
// when l cannot be read.
func decodeLive(l *liveSession, client, server *os.File) (*loop.HandedSession, error) {
	if l == nil || client == nil || server == nil {
		for _, f := range []*os.File{client, server} {
			if f != nil {
				f.Close()
			}
		}
		return nil, errors.New("upgrade: a session without its state or both sockets")
	}
	st, err := relay.DecodeState(l.State)
	if err != nil {
		client.Close()
		server.Close()
		return nil, err
	}
	return &loop.HandedSession{State: st, ClientBytes: l.ClientBytes, ServerBytes: l.ServerBytes, WS: l.WS,
		Client: client, Server: server}, nil
}

// answerTimeout bounds how long the old process waits for the successor
// to adopt one session; past it the session is taken back.
const answerTimeout = 10 * time.Second

// HandSession sends one live session to the successor and waits for its
// answer; on any error the successor did not take it (and closed what it
// got), and the caller still owns h's sockets. Not concurrently.
func (u *Upgrade) HandSession(h *loop.HandedSession) error { return u.HandSessionAs(nil, h) }

// HandSessionAs is HandSession for a root proxy's session, which relays
// as acct in a worker of the new process.
func (u *Upgrade) HandSessionAs(acct *authn.Account, h *loop.HandedSession) error {
	if u == nil || u.ch == nil {
		return errors.New("upgrade: no conduit to the new process")
	}
	l, err := encodeLive(h, acct)
	if err != nil {
		return err
	}
	if err := u.ch.sendPair(&message{Op: "session", Live: l}, h.Client, &message{Op: "session-server"}, h.Server); err != nil {
		return err
	}
	answer := make(chan *message, 1)
	go func() {
		m, f, err := u.ch.recv()
		if f != nil {
			f.Close()
		}
		if err != nil {
			m = &message{Op: "refused", Err: err.Error()}
		}
		answer <- m
	}()
	select {
	case m := <-answer:
		switch m.Op {
		case "adopted":
			h.Close() // our copies: the successor holds its own
			return nil
		case "refused":
			return fmt.Errorf("upgrade: the new process refused the session: %s", m.Err)
		}
		return fmt.Errorf("upgrade: unexpected %q from the new process", m.Op)
	case <-time.After(answerTimeout):
		// The conduit is out of step now: no more sessions over it.
		u.ch.close()
		u.ch = nil
		return errors.New("upgrade: the new process did not answer")
	}
}

// Close ends the exchange: the successor stops waiting for sessions.
func (u *Upgrade) Close() {
	if u == nil || u.ch == nil {
		return
	}
	u.ch.send(&message{Op: "sessions-done"}, nil)
	u.ch.close()
	u.ch = nil
}

// maxLiveSessions bounds how many sessions one predecessor hands over.
const maxLiveSessions = 1 << 20

// TakeSessions adopts the live sessions the old process hands over with
// resume (acct: the worker account of a root proxy's session, else nil),
// answering each, until it says it is done or the conduit closes. resume
// owns the session's files whether it fails or not.
func (s *Successor) TakeSessions(resume func(acct *authn.Account, h *loop.HandedSession) error) (adopted, refused int) {
	if s == nil {
		return 0, 0
	}
	defer s.ch.close()
	for n := 0; n < maxLiveSessions; n++ {
		m, client, err := s.ch.recv()
		if err != nil || m.Op != "session" {
			if client != nil {
				client.Close()
			}
			return adopted, refused
		}
		err = s.takeOne(m, client, resume)
		answer := &message{Op: "adopted"}
		if err != nil {
			answer = &message{Op: "refused", Err: err.Error()}
			refused++
		} else {
			adopted++
		}
		if s.ch.send(answer, nil) != nil {
			return adopted, refused
		}
	}
	return adopted, refused
}

// takeOne reads the session's server socket and adopts the session.
func (s *Successor) takeOne(m *message, client *os.File, resume func(*authn.Account, *loop.HandedSession) error) error {
	sm, server, err := s.ch.recv()
	if err != nil || sm.Op != "session-server" {
		if server != nil {
			server.Close()
		}
		server = nil
	}
	h, err := decodeLive(m.Live, client, server)
	if err != nil {
		return err
	}
	return resume(m.Live.Account, h)
}
