// Package privsep runs relays in worker processes that hold no root
// privileges: the main process (root) authenticates, then passes each
// client's socket to the worker of the target account over a unix
// socketpair (SCM_RIGHTS). docs/privsep.md has the design.
package privsep

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
)

// message is one control message. The main process sends config (first),
// session (with the client's socket), stop, info, sessions, counters,
// records and exit; a worker sends ready, reply (to Seq), ended (with its
// counters), access (a session's access record, which the main process
// writes in its log), use and failed (where a session went: pool ID,
// Display, Next) and shutdown.
type message struct {
	Op       string         `json:"op"`
	Seq      uint64         `json:"seq,omitempty"`
	ID       uint64         `json:"id,omitempty"`
	Handoff  *relay.Handoff `json:"handoff,omitempty"`
	Config   *WorkerConfig  `json:"config,omitempty"`
	Info     []byte         `json:"info,omitempty"` // an xpra frame: ["info", dict]
	Counters *loop.Counters `json:"counters,omitempty"`
	Records  []relay.Record `json:"records,omitempty"`
	// Access is an access report: one session's record.
	Access *relay.AccessRecord `json:"access,omitempty"`
	// Pool, Display and Next are a use or failed report: the session's
	// pool ("" for none), the member (unredacted: the main process
	// matches it) and, for failed, the one tried next.
	Pool    string `json:"pool,omitempty"`
	Display string `json:"display,omitempty"`
	Next    string `json:"next,omitempty"`
	PID     int    `json:"pid,omitempty"`
	// Network and Address name a listening socket an upgrade hands over
	// (upgrade.go).
	Network string `json:"network,omitempty"`
	Address string `json:"address,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Socket  string `json:"socket,omitempty"`
	OK      bool   `json:"ok,omitempty"`
	Err     string `json:"err,omitempty"`
	// Live is a relaying session an upgrade hands over (upgrade.go),
	// beside its client's socket; its server's follows in a message of
	// its own.
	Live *liveSession `json:"live,omitempty"`
	// Handed and Kept answer a worker's handover (rootupgrade.go).
	Handed int `json:"handed,omitempty"`
	Kept   int `json:"kept,omitempty"`
}

// Datagrams carry at most partSize bytes after a one-byte flag (1: more
// parts follow), so that a message of any size (the info of thousands of
// sessions) fits SOCK_SEQPACKET's per-datagram limit; maxMessage bounds
// what a peer can make the other hold.
const (
	partSize   = 60 << 10
	maxMessage = 64 << 20
)

// channel is one end of a control socketpair.
type channel struct {
	c   *net.UnixConn
	wmu sync.Mutex
	buf []byte
	oob []byte
}

func newChannel(c *net.UnixConn) *channel {
	return &channel{c: c, buf: make([]byte, partSize+1), oob: make([]byte, unix.CmsgSpace(4))}
}

// socketpair makes a connected SOCK_SEQPACKET pair: ours, and the file to
// give the child.
func socketpair() (*channel, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("privsep: socketpair: %w", err)
	}
	ch, err := fileChannel(os.NewFile(uintptr(fds[0]), "control"))
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return ch, os.NewFile(uintptr(fds[1]), "worker-control"), nil
}

// fileChannel makes a channel of a socket file, which it closes (the
// channel holds a dup).
func fileChannel(f *os.File) (*channel, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("privsep: control socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("privsep: control descriptor is not a unix socket")
	}
	return newChannel(uc), nil
}

// send writes m, with f's descriptor attached to its first part.
func (ch *channel) send(m *message, f *os.File) error {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	return ch.sendLocked(m, f)
}

// sendPair writes two messages with nothing of another sender between
// them (a live session and its server's socket).
func (ch *channel) sendPair(m1 *message, f1 *os.File, m2 *message, f2 *os.File) error {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	if err := ch.sendLocked(m1, f1); err != nil {
		return err
	}
	return ch.sendLocked(m2, f2)
}

func (ch *channel) sendLocked(m *message, f *os.File) error {
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("privsep: encode %s: %w", m.Op, err)
	}
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), partSize)
		part := make([]byte, 0, n+1)
		more := byte(0)
		if n < len(data) {
			more = 1
		}
		part = append(append(part, more), data[:n]...)
		data = data[n:]
		var err error
		if first && f != nil {
			err = withFd(f, func(fd int) error {
				_, _, err := ch.c.WriteMsgUnix(part, unix.UnixRights(fd), nil)
				return err
			})
		} else {
			_, _, err = ch.c.WriteMsgUnix(part, nil, nil)
		}
		if err != nil {
			return fmt.Errorf("privsep: send %s: %w", m.Op, err)
		}
	}
	return nil
}

// withFd runs fn with f's descriptor without putting it in blocking mode,
// as (*os.File).Fd would: the open file description is shared with this
// process's own socket (a listener still accepting, whose Accept would
// then block in the kernel and its Close wait for a connection).
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(p uintptr) { ferr = fn(int(p)) }); err != nil {
		return err
	}
	return ferr
}

// recv reads one message and the descriptor that came with it, if any.
// Only one goroutine receives on a channel.
func (ch *channel) recv() (*message, *os.File, error) {
	var (
		data []byte
		file *os.File
	)
	for {
		n, oobn, flags, _, err := ch.c.ReadMsgUnix(ch.buf, ch.oob)
		if err != nil {
			if file != nil {
				file.Close()
			}
			return nil, nil, err
		}
		if oobn > 0 {
			if f, err := parseRights(ch.oob[:oobn]); err == nil && file == nil {
				file = f
			} else if f != nil {
				f.Close()
			}
		}
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n == 0 {
			if file != nil {
				file.Close()
			}
			return nil, nil, errors.New("privsep: truncated control message")
		}
		data = append(data, ch.buf[1:n]...)
		if len(data) > maxMessage {
			if file != nil {
				file.Close()
			}
			return nil, nil, errors.New("privsep: control message too large")
		}
		if ch.buf[0] == 0 {
			break
		}
	}
	m := new(message)
	if err := json.Unmarshal(data, m); err != nil {
		if file != nil {
			file.Close()
		}
		return nil, nil, fmt.Errorf("privsep: decode control message: %w", err)
	}
	return m, file, nil
}

func (ch *channel) close() error { return ch.c.Close() }

// parseRights returns the single descriptor of an SCM_RIGHTS message;
// any extra ones are closed.
func parseRights(oob []byte) (*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var out *os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			if out == nil {
				out = os.NewFile(uintptr(fd), "passed")
			} else {
				unix.Close(fd)
			}
		}
	}
	if out == nil {
		return nil, errors.New("privsep: no descriptor")
	}
	return out, nil
}

// encodeInfo and decodeInfo carry info dicts as xpra frames, which keep
// every value's type (JSON would not).
func encodeInfo(d frame.Dict) []byte {
	w := frame.Writer{Encoding: frame.Rencode}
	b, err := w.AppendPacket(nil, frame.Packet{"info", d})
	if err != nil {
		return nil
	}
	return b
}

func decodeInfo(b []byte) (frame.Dict, error) {
	var r frame.Reader
	r.MaxPacketSize = maxMessage
	p, _, err := r.Next(b)
	if err != nil {
		return nil, err
	}
	if len(p) < 2 {
		return nil, errors.New("privsep: empty info")
	}
	d, ok := p[1].(frame.Dict)
	if !ok {
		return nil, errors.New("privsep: info is not a dict")
	}
	return d, nil
}
