package relay

// Requests a logged-in hello makes instead of a session: info, id and
// stop (of the proxy or of one of its connections).

import (
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
)

// answer replies to a request-only hello (after authentication): the
// proxy's info, its id, or a stop of the proxy or of one connection.
// Control calls visit every loop, so they run off this one.
func (s *Session) answer(r string) {
	s.outcome("request")
	instance, _ := s.caps.Text("proxy-instance")
	var id uint64
	if instance != "" {
		n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(instance, ":"), "proxy-"), 10, 64)
		if err != nil || n == 0 || s.cfg.Control == nil {
			s.disconnect(CloseNoTarget, "session not found error", "no proxy instance "+instance)
			return
		}
		id = n
	}
	ctl := s.cfg.Control
	if !s.cfg.Local {
		// Remote users see their own connection only, never the proxy's
		// other users.
		ctl = nil
		if id != 0 {
			s.disconnect(CloseDenied, "permission error", "proxy instances can only be queried from a local socket")
			return
		}
	}
	switch {
	case r == "id":
		s.send(frame.Packet{"hello", frame.NewDict("session-type", "xpraproxy", "platform", "linux", "display", s.cfg.OwnDisplay)})
		s.ending(CloseRequest, r+" request")
		s.beginClose()
		return
	case r == "info" && ctl == nil:
		s.send(frame.Packet{"hello", s.clientInfo()})
		s.ending(CloseRequest, r+" request")
		s.beginClose()
		return
	case r == "stop" && (!s.cfg.Local || ctl == nil):
		// xpra's STOP_PROXY_SOCKET_TYPES: local sockets only.
		s.disconnect(CloseDenied, "permission error", "cannot stop proxy server from a remote connection")
		return
	case (r == "reload" || r == "upgrade") && (!s.cfg.Local || ctl == nil || id != 0):
		s.disconnect(CloseDenied, "permission error", "the proxy can only be "+strings.TrimSuffix(r, "e")+"ed from its local socket")
		return
	case r == "stop" && id == 0:
		// xpra's protocol: a hello back, then the client's
		// shutdown-server packet.
		s.send(frame.Packet{"hello", frame.NewDict("version", s.claimed, "client-shutdown", true,
			"session-type", "xpraproxy", "display", s.cfg.OwnDisplay)})
		s.state = stateStop
		s.deadline = time.Now().Add(s.cfg.LoginTimeout)
		return
	}
	var (
		info frame.Dict
		ok   bool
		fail string
	)
	s.offLoop(WorkAuth, func() {
		switch {
		case r == "reload" || r == "upgrade":
			do := ctl.Reload
			if r == "upgrade" {
				do = ctl.Upgrade
			}
			what, err := do()
			if ok = err == nil; ok {
				info = frame.NewDict("version", s.claimed, strings.TrimSuffix(r, "e")+"ed", what)
			} else {
				fail = err.Error()
			}
		case r == "info" && id != 0:
			info, ok = ctl.SessionInfo(id)
		case r == "info":
			info, ok = ctl.Info(), true
		case r == "stop":
			if ok = ctl.StopSession(id); ok {
				info = frame.NewDict("version", s.claimed, "stopped", "proxy-"+strconv.FormatUint(id, 10))
			}
		}
	}, func() {
		if fail != "" {
			s.disconnect(CloseRequest, "server error", fail)
			return
		}
		if !ok {
			s.disconnect(CloseNoTarget, "session not found error", "no proxy instance "+instance)
			return
		}
		if r == "stop" {
			s.logger().Info("proxy instance stopped by request", "instance", instance)
		}
		s.send(frame.Packet{"hello", info})
		s.ending(CloseRequest, r+" request")
		s.beginClose()
	}, nil)
}

// readStop waits for the shutdown-server packet of `xpra stop`.
func (s *Session) readStop() {
	for s.state == stateStop {
		p, ok := s.nextPacket()
		if !ok {
			return
		}
		switch p.Type() {
		case "": // a chunk of a packet
		case "shutdown-server":
			s.logger().Warn("proxy server shutdown requested")
			s.disconnect(CloseShutdown, "server shutdown", "proxy server stopped by request")
			s.cfg.Control.Shutdown()
		case "disconnect":
			s.ending(CloseRequest, "stop request", "the client disconnected")
			s.beginClose()
		default:
			s.disconnect(CloseClientError, "protocol error", fmt.Sprintf("unexpected %s", p.Type()))
		}
	}
}

// ProcessInfo is what every info answer starts with: versions and the
// process that serves it.
func ProcessInfo() frame.Dict {
	host, _ := os.Hostname()
	return frame.NewDict(
		"version", XpraVersion,
		"xpraproxy.version", Version,
		"mode", "proxy",
		"hostname", host,
		"pid", os.Getpid(),
		"uid", os.Getuid(),
		"gid", os.Getgid(),
		"gc-percent", gcPercent(),
	)
}

// gcPercent is the Go GC target the process runs with (--gc-percent or
// GOGC), read without setting it; -1: off.
func gcPercent() int64 {
	m := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 {
		return -1
	}
	return int64(m[0].Value.Uint64())
}
