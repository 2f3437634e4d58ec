package loop

// host is what the reactor provides to a session (relay.Host): off-loop
// work, posting back to the loop, watching, and moving a backend onto the
// session's loop; and gnet's log lines in the proxy's log.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/panjf2000/gnet/v2"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
	"golang.org/x/sys/unix"
)

// host implements relay.Host for sessions of one loop.
type host struct {
	srv *Server
	el  gnet.EventLoop
	ls  *loopState
	t   *ticket
}

// Stats are the whole proxy's figures, for a session's info.
func (h *host) Stats() frame.Dict { return h.srv.Stats() }

// CountHandshake counts an outcome for the metrics.
func (h *host) CountHandshake(result string) { h.srv.CountHandshake(result) }

// Admitted: the client logged in and leaves the pre-login caps.
func (h *host) Admitted(*relay.Session) { h.t.admitted() }

// Progress: the client's login reached st; the less advanced a
// connection, the sooner it makes way when the pre-login cap is full.
func (h *host) Progress(_ *relay.Session, st relay.LoginStage) {
	switch st {
	case relay.LoginHello:
		h.t.progress(stageHello)
	case relay.LoginAuthenticated:
		h.t.progress(stageAuthed)
	}
}

// Release gives the client's connection to another process (relay.Host):
// a plain socket as a dup, the loop's connection closed at once (on the
// loop) so that nothing more is read from it; a TLS connection's
// plaintext through a splice, the record layer staying here.
func (h *host) Release(c relay.Conn) (*os.File, error) {
	switch end := transportOf(c).(type) {
	case *tlsConn:
		return h.srv.splice(connOf(end.Conn), end)
	case *streamConn:
		return h.srv.splice(end.cn, end)
	case gnet.Conn:
		// Close-on-exec from the start: a worker (of another account)
		// being started meanwhile must not inherit this client's socket.
		fd, err := unix.FcntlInt(uintptr(end.Fd()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("loop: duplicate the client socket: %w", err)
		}
		_ = h.el.Close(end)
		return os.NewFile(uintptr(fd), "client"), nil
	}
	return nil, errors.New("loop: not a connection of this loop")
}

// transportOf is the connection under a client's WebSocket framing: its
// TLS layer, its stream, or gnet's socket.
func transportOf(c relay.Conn) relay.Conn {
	if w, ok := c.(*wsConn); ok {
		return w.Conn
	}
	return c
}

// PauseReading parks c's socket (park.go); loop only.
func (h *host) PauseReading(c relay.Conn) { h.srv.pauseReading(h.ls, c) }

// ResumeReading hands c's socket back to gnet (park.go); loop only.
func (h *host) ResumeReading(c relay.Conn) { h.srv.resumeReading(h.ls, c) }

// Post runs fn on the session's loop.
func (h *host) Post(fn func()) {
	_ = h.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		fn()
		return nil
	}))
}

// Watch puts the session on the loop's short sweep list (loop only).
func (h *host) Watch(s *relay.Session) { h.ls.urgent[s] = struct{}{} }

// Go queues work in the pool of its kind, then runs done on the
// session's loop; false when the pool's queue is full.
func (h *host) Go(kind relay.WorkKind, work, done func()) bool {
	p := h.srv.auth
	if kind == relay.WorkDial {
		p = h.srv.dial
	}
	return p.submit(job{el: h.el, work: work, done: done})
}

// Enroll moves a logged-in backend onto the session's loop; OnOpen then
// hands it to the session.
func (h *host) Enroll(sess *relay.Session, b *relay.Backend) error {
	ch, err := h.el.Enroll(gnet.NewContext(context.Background(), &conn{role: roleServer, sess: sess, pre: &pre{backend: b}}), b.Conn)
	if err != nil {
		return err
	}
	go func() {
		if r := <-ch; r.Err != nil {
			h.srv.log.Warn("cannot enroll backend", "session", sess.ID, "err", r.Err)
			_ = h.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				sess.BackendFailed(r.Err)
				return nil
			}))
		}
	}()
	return nil
}

// gnetLogger sends gnet's own messages to slog, its chatter at debug level.
type gnetLogger struct{ log *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.log.Debug(fmt.Sprintf(f, a...), "from", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.log.Debug(fmt.Sprintf(f, a...), "from", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.log.Warn(fmt.Sprintf(f, a...), "from", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.log.Error(fmt.Sprintf(f, a...), "from", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) {
	g.log.Error(fmt.Sprintf(f, a...), "from", "gnet")
	os.Exit(1)
}
