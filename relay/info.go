package relay

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/bridge"
	"github.com/xpraproxy/xpraproxy/frame"
)

// What a session says of itself: xpra info, the proxy's lists, the
// part of a server's info-response the proxy adds.

// Info is the proxy's own description of this session, for `xpra info`
// through the proxy, `xpraproxy info :proxy-ID` and info-response
// augmentation: Summary, plus the process and proxy-wide figures.
func (s *Session) Info() frame.Dict {
	d := ProcessInfo()
	for _, kv := range s.Summary() {
		k, _ := frame.AsText(kv.Key)
		d.Set(k, kv.Value)
	}
	if st := s.host.Stats(); st != nil {
		d.Set("proxy-server", st)
	}
	return d
}

// clientInfo is what the session's own client may see (its info
// requests, and the proxy's part of a server's info-response). A client
// of a network listener sees its own connection only: nothing of the
// proxy's process or its other users (pid, uid, session counts, memory),
// which are for local sockets.
func (s *Session) clientInfo() frame.Dict {
	if s.cfg.Local {
		return s.Info()
	}
	d := frame.NewDict("version", s.claimed, "xpraproxy.version", Version, "mode", "proxy")
	for _, kv := range s.Summary() {
		switch k, _ := frame.AsText(kv.Key); k {
		case "pid", "uid":
		default:
			d.Set(k, kv.Value)
		}
	}
	return d
}

// linkInfo is the client's connection as info shows it: its address and,
// for a client adopted from another process, the transport found there.
func (s *Session) linkInfo() frame.Dict {
	d := frame.NewDict("peer", s.peer)
	if s.helloSeen {
		// The generation its encoder says (6.x: rencodeplus).
		g := bridge.Gen31
		if s.enc == frame.RencodePlus {
			g = bridge.Gen6
		}
		d.Set("generation", g.String())
	}
	if s.link != nil {
		if s.link.Transport != "" {
			d.Set("transport", s.link.Transport)
		}
		d.Set("tls", s.link.TLS)
		if s.link.Transport == "ws" {
			d.Set("websocket-require-mask", s.link.RequireMask)
		}
	}
	return d
}

// Summary describes the session alone, cheaply enough to list thousands:
// who, where to, traffic, latency and the process that relays it.
func (s *Session) Summary() frame.Dict {
	d := frame.NewDict("pid", os.Getpid(), "uid", os.Getuid())
	d.Set("session", int64(s.ID))
	d.Set("name", s.Name())
	d.Set("user", s.user)
	d.Set("state", s.state.String())
	d.Set("uptime", int64(time.Since(s.started).Seconds()))
	d.Set("client", s.linkInfo())
	if s.pool != "" {
		d.Set("pool", s.pool)
	}
	if s.display != "" {
		d.Set("display", s.display)
		d.Set("target", s.target)
		d.Set("server", frame.NewDict("target", s.target))
	}
	if s.c2s != nil && s.s2c != nil {
		d.Set("client-to-server", frame.NewDict("bytes", s.c2s.Bytes, "packets", s.c2s.Packets))
		d.Set("server-to-client", frame.NewDict("bytes", s.s2c.Bytes, "packets", s.s2c.Packets))
		if b := s.s2c.bridge; b != nil {
			d.Set("bridge", b.info())
		}
		lat := frame.NewDict()
		// xpra's proxy reports its latencies in ms under latency; µs
		// too, as loopback round trips are well under a millisecond.
		// The proxy's own pings measure them when the peers echo source
		// ids; otherwise pings passing through do.
		if pg := s.ping; pg != nil {
			if pg.clientRTT > 0 {
				lat.Set("client-ping", pg.clientRTT.Milliseconds())
				lat.Set("client-ping-us", pg.clientRTT.Microseconds())
			}
			if pg.serverRTT > 0 {
				lat.Set("server-ping", pg.serverRTT.Milliseconds())
				lat.Set("server-ping-us", pg.serverRTT.Microseconds())
			}
			lat.Set("own-echoes", pg.echoesHidden)
		}
		if s.s2c.rtt > 0 {
			lat.Set("client", s.s2c.rtt.Milliseconds())
			lat.Set("client-us", s.s2c.rtt.Microseconds())
		}
		if s.c2s.rtt > 0 {
			lat.Set("server", s.c2s.rtt.Milliseconds())
			lat.Set("server-us", s.c2s.rtt.Microseconds())
		}
		d.Set("latency", lat)
	}
	d.Set("buffered", int64(s.Buffered()))
	if s.cfg.Video != nil && s.video != nil {
		d.Set("video", frame.NewDict("backend", s.cfg.Video.Name(), "encoded", s.video.encoded,
			"passed-through", s.video.passed, "pending", s.video.pending))
	}
	return d
}

// Name is the connection's instance name, as xpra's proxy-PID.
func (s *Session) Name() string { return "proxy-" + strconv.FormatUint(s.ID, 10) }

// addInfo puts the proxy's info into a server info dict: nested under
// "proxy", or as flattened "proxy.*" keys when the server flattened its.
func (s *Session) addInfo(info frame.Dict) frame.Dict {
	flat := false
	for _, kv := range info {
		if k, _ := frame.AsText(kv.Key); len(k) > 0 && strings.Contains(k, ".") {
			flat = true
			break
		}
	}
	if !flat {
		info.Set("proxy", s.clientInfo())
		return info
	}
	for _, kv := range s.clientInfo() {
		k, _ := frame.AsText(kv.Key)
		if sub, ok := kv.Value.(frame.Dict); ok {
			for _, kv2 := range sub {
				k2, _ := frame.AsText(kv2.Key)
				info.Set("proxy."+k+"."+k2, kv2.Value)
			}
			continue
		}
		info.Set("proxy."+k, kv.Value)
	}
	return info
}
