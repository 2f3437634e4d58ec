package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
)

// The proxy's own pings, as xpra's proxy instance sends them: ["ping",
// monotonic ms, wall ms, uuid] to each peer every PingInterval. Peers with
// the ping-echo-sourceid capability answer ["ping_echo", ms, l1, l2, l3,
// sl, uuid]; echoes carrying the proxy's uuid are its own: measured and
// dropped, never forwarded (the address translation of Prosody's
// mod_client_proxy, applied to one packet type). Everything else passes
// through untouched.

// pinger is a session's ping state (allocated once relaying starts, only
// when pings are on).
type pinger struct {
	uuid         []byte
	clientEcho   bool // the client answers with the source id
	serverEcho   bool
	last         time.Time
	clientRTT    time.Duration
	serverRTT    time.Duration
	clientSent   time.Time // when the last ping went out (the echo carries its ms)
	serverSent   time.Time
	echoesHidden int64
}

func newPinger(clientCaps, serverCaps frame.Dict) *pinger {
	b := make([]byte, 16)
	rand.Read(b)
	p := &pinger{uuid: []byte("xpraproxy-" + hex.EncodeToString(b))}
	p.clientEcho, _ = clientCaps.Bool("ping-echo-sourceid")
	p.serverEcho, _ = serverCaps.Bool("ping-echo-sourceid")
	if !p.clientEcho && !p.serverEcho {
		return nil // nobody could tell our echoes from the others'
	}
	return p
}

var epoch = time.Now()

func monoMS() int64 { return time.Since(epoch).Milliseconds() + 1 }

// maybePing sends the pings that are due (from Sweep, on the loop).
func (s *Session) maybePing(now time.Time) {
	pg := s.ping
	if pg == nil || s.state != stateRelay || now.Sub(pg.last) < s.cfg.PingInterval {
		return
	}
	pg.last = now
	ms := monoMS()
	pkt := frame.Packet{"ping", ms, now.UnixMilli(), string(pg.uuid)}
	if pg.clientEcho && s.s2c.atBoundary() {
		if bb, err := encodeOwn(frame.Writer{Encoding: s.enc}, pkt); err == nil {
			s.s2c.write(bb.B)
			putOwn(bb)
			pg.clientSent = now
		}
	}
	if pg.serverEcho {
		pg.serverSent = now
		s.ackToServer(pkt)
	}
}

// atBoundary reports whether a packet of the proxy's own can be written
// to dst now without cutting into a packet in progress.
func (p *pipe) atBoundary() bool {
	return p.remaining == 0 && !p.midPacket
}

// ownEcho handles a ping_echo: true when it answers one of the proxy's
// pings (then it is measured and must not be forwarded).
func (p *pipe) ownEcho(pkt frame.Packet) bool {
	pg := p.s.ping
	if pg == nil || len(pkt) < 7 {
		return false
	}
	sid, _ := frame.AsText(pkt[6])
	if !bytes.Equal([]byte(sid), pg.uuid) {
		return false
	}
	// Measured from the send time kept here (the echoed ms has only
	// millisecond precision; loopback round trips are shorter).
	if p.toServer && !pg.clientSent.IsZero() {
		pg.clientRTT, pg.clientSent = max(time.Since(pg.clientSent), time.Microsecond), time.Time{}
	} else if !p.toServer && !pg.serverSent.IsZero() {
		pg.serverRTT, pg.serverSent = max(time.Since(pg.serverSent), time.Microsecond), time.Time{}
	}
	pg.echoesHidden++
	return true
}
