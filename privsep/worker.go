package privsep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/gpu"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// WorkerConfig is what a worker needs to relay: the relay limits and
// where to put its instance socket. It holds no secret.
type WorkerConfig struct {
	// Limits are the main process's, as they are: every session option
	// reaches a worker's sessions by this one value.
	Limits         relay.Limits `json:"limits"`
	MaxBufferTotal int64        `json:"max_buffer_total"`
	ReadSize       int          `json:"read_size"`
	Loops          int          `json:"loops"`
	// SocketDirs are templates ($UID, ~) expanded for the worker's user;
	// the first it can write to gets its instance socket.
	SocketDirs []string `json:"socket_dirs"`
	Hostname   string   `json:"hostname"`
	// Video is --proxy-video-encoders; the worker runs its own pool.
	Video string `json:"video,omitempty"`
	// GCPercent, when set, is the Go GC target the main process runs
	// with (--gc-percent): a worker holds the sessions' buffers, so the
	// density the option tunes is the worker's. nil: GOGC, as the main
	// process's environment passes it.
	GCPercent *int `json:"gc_percent,omitempty"`
	// BurstGCPercent is --burst-gc-percent: the GC target while a worker's
	// sessions start, for the program's memory tuning (RunWorker's started
	// hook).
	BurstGCPercent int `json:"burst_gc_percent,omitempty"`
}

// ControlFD is the descriptor on which a worker finds its control socket.
const ControlFD = 3

// Drop switches the process to acct for good: supplementary groups, gid,
// uid (real, effective and saved), no new privileges; then it checks that
// root cannot be regained. It must run before the worker touches anything
// it was handed.
func Drop(acct authn.Account) error {
	if acct.Root() {
		return errors.New("privsep: refusing to run a worker as root")
	}
	groups := acct.Groups
	if len(groups) == 0 {
		groups = []int{acct.GID}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("privsep: setgroups: %w", err)
	}
	if err := syscall.Setresgid(acct.GID, acct.GID, acct.GID); err != nil {
		return fmt.Errorf("privsep: setresgid %d: %w", acct.GID, err)
	}
	if err := syscall.Setresuid(acct.UID, acct.UID, acct.UID); err != nil {
		return fmt.Errorf("privsep: setresuid %d: %w", acct.UID, err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("privsep: no_new_privs: %w", err)
	}
	return Verify(acct)
}

// Verify checks that the process runs as acct and cannot become root
// again: setuid(0) and setgid(0) must fail.
func Verify(acct authn.Account) error {
	r, e, s := unix.Getresuid()
	if r != acct.UID || e != acct.UID || s != acct.UID {
		return fmt.Errorf("privsep: uids are %d/%d/%d, want %d", r, e, s, acct.UID)
	}
	r, e, s = unix.Getresgid()
	if r != acct.GID || e != acct.GID || s != acct.GID {
		return fmt.Errorf("privsep: gids are %d/%d/%d, want %d", r, e, s, acct.GID)
	}
	gs, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("privsep: getgroups: %w", err)
	}
	for _, g := range gs {
		if g == 0 || (!slices.Contains(acct.Groups, g) && g != acct.GID) {
			return fmt.Errorf("privsep: unexpected supplementary group %d", g)
		}
	}
	if err := syscall.Setresuid(0, 0, 0); err == nil {
		return errors.New("privsep: could regain uid 0 after dropping privileges")
	}
	if err := syscall.Setresgid(0, 0, 0); err == nil {
		return errors.New("privsep: could regain gid 0 after dropping privileges")
	}
	return nil
}

// ParseAccount reads a worker's --uid/--gid/--groups arguments.
func ParseAccount(uid, gid, groups string) (authn.Account, error) {
	var a authn.Account
	var err error
	if a.UID, err = strconv.Atoi(uid); err != nil {
		return a, fmt.Errorf("privsep: --uid: %w", err)
	}
	if a.GID, err = strconv.Atoi(gid); err != nil {
		return a, fmt.Errorf("privsep: --gid: %w", err)
	}
	for _, g := range strings.Split(groups, ",") {
		if g == "" {
			continue
		}
		n, err := strconv.Atoi(g)
		if err != nil {
			return a, fmt.Errorf("privsep: --groups: %w", err)
		}
		a.Groups = append(a.Groups, n)
	}
	if !slices.Contains(a.Groups, a.GID) {
		a.Groups = append([]int{a.GID}, a.Groups...)
	}
	return a, nil
}

// RunWorker is the worker process after Drop: it reads its config from
// the control socket, serves handed-over clients on its own loops until
// the main process goes away or says exit, and reports each session's end.
// started, when set, is called once the loops run: the program's
// process-wide tuning (the GC target in login bursts, returning memory to
// the OS) is the program's, as in the main process.
func RunWorker(log *slog.Logger, started func(srv *loop.Server, cfg WorkerConfig)) error {
	// The parent-death signal was cleared by the uid change: re-arm it,
	// then make sure the parent did not die in between.
	ppid := os.Getppid()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("privsep: pdeathsig: %w", err)
	}
	if ppid == 1 || os.Getppid() != ppid {
		return errors.New("privsep: the main process is gone")
	}
	ch, err := fileChannel(os.NewFile(ControlFD, "control"))
	if err != nil {
		return err
	}
	defer ch.close()
	m, _, err := ch.recv()
	if err != nil || m.Op != "config" || m.Config == nil {
		return fmt.Errorf("privsep: no config from the main process: %v", err)
	}
	w := &worker{ch: ch, cfg: *m.Config, log: log, ended: make(chan report, 1024), started: started}
	return w.run()
}

type worker struct {
	ch    *channel
	cfg   WorkerConfig
	rcfg  *relay.Config // the sessions' (cfg.Limits normalised)
	log   *slog.Logger
	srv   *loop.Server
	sock  string
	ended chan report
	// started is RunWorker's hook.
	started func(*loop.Server, WorkerConfig)
	// liveAnswers are the main process's answers to the live sessions
	// this worker hands over at an upgrade (rootupgrade.go).
	liveAnswers chan *message
	liveSeq     atomic.Uint64
}

func (w *worker) run() error {
	if w.cfg.GCPercent != nil {
		debug.SetGCPercent(*w.cfg.GCPercent)
	}
	me := currentUser()
	var dirs []string
	for _, d := range w.cfg.SocketDirs {
		dirs = append(dirs, route.ExpandDir(d, me))
	}
	// The main process's values, made into a Config as it makes its own
	// (one road).
	cfg := relay.NewConfig(w.cfg.Limits, relay.Process{Hostname: w.cfg.Hostname, UID: os.Getuid(), SocketDirs: dirs, Log: w.log,
		Access: w.accessRecord})
	rcfg := &cfg
	w.rcfg = rcfg
	// The pools and the sessions' records are the main process's: it
	// hears where each session went.
	rcfg.Track = func(pool string) relay.PoolTracker { return &poolReports{w: w, pool: pool} }
	if pool, why, err := gpu.StartPool(w.cfg.Video); err != nil {
		w.log.Warn("proxy video off", "err", err)
	} else if pool != nil {
		defer pool.Close()
		rcfg.Video = pool
		w.log.Info("proxy video on", "backend", pool.Backend().Name(), "discovery", why)
	}
	var listeners []loop.Listener
	if path := w.instanceSocket(); path != "" {
		// The instance socket answers info and stop for this worker's
		// connections; mode 0600: only this account and root reach it.
		own := *rcfg
		own.Modules = []authn.Module{mustNone()}
		own.Local, own.Encrypted = true, true
		own.OwnDisplay = ":" + strings.TrimPrefix(filepath.Base(path), w.cfg.Hostname+"-")
		listeners = append(listeners, loop.Listener{Network: "unix", Address: path, Config: &own})
		w.sock = path
	} else {
		// gnet only lends its loops to an engine with a listener (and
		// binds no abstract names): a private socket that refuses
		// everyone (no modules).
		dir, err := os.MkdirTemp("", "xpraproxy-worker-")
		if err != nil {
			return fmt.Errorf("privsep: no directory for the worker's socket: %w", err)
		}
		defer os.RemoveAll(dir)
		refuse := *rcfg
		listeners = append(listeners, loop.Listener{Network: "unix", Address: filepath.Join(dir, "refuse"), Config: &refuse})
	}
	w.srv = loop.New(listeners, loop.Options{
		Loops:          w.cfg.Loops,
		MaxBufferTotal: w.cfg.MaxBufferTotal,
		ReadSize:       w.cfg.ReadSize,
		Log:            w.log,
		Config:         rcfg,
		OnClosed:       w.sessionEnded,
		// The instance socket's own connections must not take the ids
		// of handed-over ones, which the main process assigns.
		FirstID: 1 << 48,
	})
	ctl := &workerControl{w: w}
	for _, l := range listeners {
		l.Config.Control = ctl
	}
	errc := make(chan error, 1)
	go func() { errc <- w.srv.Run() }()
	select {
	case <-w.srv.Ready():
	case err := <-errc:
		return fmt.Errorf("privsep: worker loops: %w", err)
	}
	if w.started != nil {
		w.started(w.srv, w.cfg)
	}
	go w.reportEnded()
	if err := w.ch.send(&message{Op: "ready", PID: os.Getpid(), Socket: w.sock}, nil); err != nil {
		return err
	}
	w.log.Info("worker ready", "socket", w.sock)
	why, reason, err := w.serve()
	// Tell every client why before the loops stop.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.srv.ShutdownFor(ctx, reason, why)
	// The sessions' last access records are queued: let them out.
	for i := 0; i < 100 && len(w.ended) > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	<-errc
	return err
}

// serve answers the main process until it closes the socket or says exit,
// and returns what the sessions left are told and why they end.
func (w *worker) serve() (string, relay.CloseReason, error) {
	const stopped = "proxy server stopped"
	for {
		m, f, err := w.ch.recv()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || isEOF(err) {
				return stopped, relay.CloseShutdown, nil
			}
			return stopped, relay.CloseShutdown, err
		}
		switch m.Op {
		case "session":
			w.adopt(m, f)
		case "stop":
			ok := w.srv.StopSession(m.ID)
			w.reply(m, &message{OK: ok})
		case "info":
			d, ok := w.srv.SessionInfo(m.ID)
			w.reply(m, &message{OK: ok, Info: encodeInfo(d)})
		case "sessions":
			w.reply(m, &message{OK: true, Info: encodeInfo(w.srv.SessionsInfo())})
		case "counters":
			c := w.srv.Counters()
			w.reply(m, &message{OK: true, Counters: &c})
		case "records":
			// Answered off this goroutine: the loops may take up to
			// their bound, and stop or session must not wait for it.
			go func() {
				recs, complete := w.srv.Records()
				w.reply(m, &message{OK: complete, Records: recs})
			}()
		case "handover":
			if w.liveAnswers == nil {
				w.liveAnswers = make(chan *message, 1)
			}
			go func() {
				handed, kept := w.srv.HandOver(w.giveLive)
				w.reply(m, &message{OK: true, Handed: handed, Kept: kept})
			}()
		case "live-answer":
			select {
			case w.liveAnswers <- m:
			default:
			}
		case "resume":
			w.resume(m, f)
		case "exit":
			w.log.Info("worker exiting at the main process's request")
			why, reason := stopped, relay.CloseShutdown
			if m.Err != "" {
				why = m.Err // what its clients are told (an upgrade's drain)
			}
			if r, ok := relay.CloseReasonNamed(m.Kind); ok {
				reason = r
			}
			return why, reason, nil
		default:
			if f != nil {
				f.Close()
			}
			w.log.Warn("unknown control message", "op", m.Op)
		}
	}
}

func (w *worker) reply(req, m *message) {
	m.Op, m.Seq = "reply", req.Seq
	if err := w.ch.send(m, nil); err != nil {
		w.log.Warn("cannot answer the main process", "err", err)
	}
}

// adopt takes a handed-over client socket onto the loops.
func (w *worker) adopt(m *message, f *os.File) {
	if f == nil || m.Handoff == nil {
		w.log.Error("handoff without a socket")
		if f != nil {
			f.Close()
		}
		if m.Handoff != nil {
			w.sessionEnded(m.Handoff.ID)
		}
		return
	}
	c, err := net.FileConn(f)
	f.Close()
	if err == nil {
		err = w.srv.Adopt(m.Handoff, c)
		c.Close()
	}
	if err != nil {
		w.log.Error("cannot adopt the connection", "session", m.Handoff.ID, "err", err)
		w.accessRecord(m.Handoff.AccessRecord(time.Now(), relay.CloseInternal, "server error: cannot relay the connection"))
		w.sessionEnded(m.Handoff.ID)
	}
}

// report is a session's end (id) or its access record, on its way to
// the main process.
type report struct {
	id     uint64
	access *relay.AccessRecord
}

// sessionEnded runs on a loop: it must not block.
func (w *worker) sessionEnded(id uint64) { w.queue(report{id: id}) }

// accessRecord is the sessions' relay.Config.Access: the main process
// writes the record in the operator's log, in its format (text, JSON,
// the journal), so that a root proxy's access log reads as a user's.
func (w *worker) accessRecord(r relay.AccessRecord) { w.queue(report{access: &r}) }

func (w *worker) queue(r report) {
	select {
	case w.ended <- r:
	default:
		go func() { w.ended <- r }()
	}
}

// reportEnded tells the main process of each session's end, with the
// worker's counters then (what it relayed stays counted after the worker
// exits), and passes on the access records.
func (w *worker) reportEnded() {
	for r := range w.ended {
		m := &message{Op: "access", Access: r.access}
		if r.access == nil {
			c := w.srv.Counters()
			m = &message{Op: "ended", ID: r.id, Counters: &c}
		}
		if err := w.ch.send(m, nil); err != nil {
			return
		}
	}
}

// poolReports is a handed-off session's relay.PoolTracker in a worker:
// the main process holds the pools (and the record of where the session
// went), so each report is a control message to it. It runs off the
// loops (in the dial's work).
type poolReports struct {
	w    *worker
	pool string
}

func (r *poolReports) Use(id uint64, display string) {
	r.send(&message{Op: "use", ID: id, Pool: r.pool, Display: display})
}

func (r *poolReports) Failed(id uint64, display, next string) {
	r.send(&message{Op: "failed", ID: id, Pool: r.pool, Display: display, Next: next})
}

func (r *poolReports) send(m *message) {
	if err := r.w.ch.send(m, nil); err != nil {
		r.w.log.Warn("cannot report to the main process", "op", m.Op, "session", m.ID, "err", err)
	}
}

// instanceSocket picks the worker's socket path: the first socket
// directory that this (dropped) user can create or write to.
func (w *worker) instanceSocket() string {
	u := currentUser()
	for _, d := range w.cfg.SocketDirs {
		d = route.ExpandDir(d, u)
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			continue
		}
		if unix.Access(d, unix.W_OK|unix.X_OK) != nil {
			continue
		}
		return filepath.Join(d, fmt.Sprintf("%s-proxy-worker-%d", w.cfg.Hostname, os.Getpid()))
	}
	w.log.Warn("no socket directory is writable by the worker's user: no instance socket (use --socket-dir=/tmp as xpra advises)",
		"dirs", strings.Join(w.cfg.SocketDirs, ","))
	return ""
}

// workerControl answers the instance socket's info and stop requests.
type workerControl struct{ w *worker }

func (c *workerControl) Info() frame.Dict {
	d := relay.ProcessInfo()
	d.Set("worker", true)
	d.Set("limits", c.w.rcfg.Limits.Info())
	d.Set("server", c.w.srv.Stats())
	d.Set("sessions", c.w.srv.SessionsInfo())
	return d
}

func (c *workerControl) SessionInfo(id uint64) (frame.Dict, bool) { return c.w.srv.SessionInfo(id) }
func (c *workerControl) StopSession(id uint64) bool               { return c.w.srv.StopSession(id) }

// Shutdown (xpra stop :proxy-worker-PID) ends this worker's sessions;
// the main process sees it exit.
func (c *workerControl) Shutdown() {
	go func() {
		time.Sleep(200 * time.Millisecond) // let the stop answer go out
		c.w.ch.close()
	}()
}

// Reload is the main process's job: a worker runs with the options it was
// started with until it exits (docs/reload.md).
func (c *workerControl) Reload() (string, error) {
	return "", errors.New("a worker is not reloaded: reload the main proxy process")
}

// Upgrade, likewise, replaces the main process, which starts new workers.
func (c *workerControl) Upgrade() (string, error) {
	return "", errors.New("a worker is not upgraded: upgrade the main proxy process")
}

func mustNone() authn.Module {
	m, err := authn.New(authn.Spec{Name: "none", Options: map[string]string{}}, authn.Env{Getenv: func(string) string { return "" }})
	if err != nil {
		panic(err) // the none module has no options to get wrong
	}
	return m
}

func currentUser() *user.User {
	if u, err := user.Current(); err == nil {
		return u
	}
	id := strconv.Itoa(os.Getuid())
	return &user.User{Uid: id, Gid: strconv.Itoa(os.Getgid()), Username: id, HomeDir: "/"}
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}
