package bench

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
)

// WorkloadSoak streams crc-checked draws on every session for Duration
// while Slow extra sessions read slowly from a server that floods them;
// the proxy's RSS is sampled throughout.
const WorkloadSoak = "soak"

// slowReaders are a few deliberately slow clients, one goroutine each
// (the only goroutines per connection in the bench, and only a handful):
// each logs in, asks its server to flood, and reads 64 KiB every 100 ms.
type slowReaders struct {
	wg           sync.WaitGroup
	disconnected atomic.Int64 // ended by the proxy with a reason
	cut          atomic.Int64 // ended without a reason
	bad          atomic.Int64 // corrupted or reordered draws
	drained      atomic.Int64 // read the whole flood
}

func (sr *slowReaders) run(addr, user string, flood int, stop <-chan struct{}) {
	sr.wg.Add(1)
	go func() {
		defer sr.wg.Done()
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			sr.cut.Add(1)
			return
		}
		defer c.Close()
		slow := &throttled{r: c, stop: stop}
		r := frame.NewStreamReader(slow, 64<<20)
		w := frame.Writer{Encoding: frame.Rencode}
		send := func(p frame.Packet) {
			b, _ := w.AppendPacket(nil, p)
			c.Write(b)
		}
		hello := helloCaps(user)
		send(frame.Packet{"hello", hello})
		next := uint32(0)
		var session uint32
		received := 0
		for {
			p, err := r.ReadPacket()
			if err != nil {
				sr.cut.Add(1)
				return
			}
			switch p.Type() {
			case "challenge":
				salt, _ := p[1].([]byte)
				d, _ := frame.AsText(p[3])
				sd, _ := frame.AsText(p[4])
				resp, cs, _ := authn.Response([]byte(benchPassword), salt, authn.Digest(d), authn.Digest(sd))
				h := append(frame.Dict(nil), hello...)
				h.Set("challenge_response", string(resp))
				h.Set("challenge_client_salt", cs)
				send(frame.Packet{"hello", h})
			case "hello":
				send(frame.Packet{pktFlood, 60 << 10, flood})
			case "draw":
				data, _ := p[7].([]byte)
				opts, _ := p[10].(frame.Dict)
				want, _ := opts.Int("crc")
				if next == 0 && len(data) >= 8 {
					session = binary.BigEndian.Uint32(data)
				}
				if len(data) < 8 || binary.BigEndian.Uint32(data) != session || binary.BigEndian.Uint32(data[4:]) != next ||
					int64(crc32.ChecksumIEEE(data)) != want {
					sr.bad.Add(1)
				}
				next++
				received += len(data)
				if received+len(data) > flood {
					sr.drained.Add(1)
					return
				}
			case "disconnect":
				sr.disconnected.Add(1)
				return
			}
		}
	}()
}

// throttled reads at most 64 KiB per 100 ms until stop, then freely.
type throttled struct {
	r    io.Reader
	stop <-chan struct{}
	last time.Time
	used int
}

func (t *throttled) Read(p []byte) (int, error) {
	select {
	case <-t.stop:
		return t.r.Read(p)
	default:
	}
	if time.Since(t.last) >= 100*time.Millisecond {
		t.last, t.used = time.Now(), 0
	}
	if t.used >= 64<<10 {
		time.Sleep(100*time.Millisecond - time.Since(t.last))
		t.last, t.used = time.Now(), 0
	}
	n, err := t.r.Read(p[:min(len(p), 64<<10-t.used)])
	t.used += n
	return n, err
}

// soak runs after the sessions are open: stream on all, flood the slow
// readers, sample the proxy's RSS.
func soak(cfg Config, res *Result, p *proxyProc, cl *clients, conns []*clientConn) {
	for _, cc := range conns {
		cc.conn.AsyncWrite(cc.packet(packetStream(cfg)), nil)
	}
	var sr slowReaders
	stop := make(chan struct{})
	for i := range cfg.Slow {
		sr.run(p.addr, fmt.Sprintf("u%d", i%cfg.Sessions), 64<<20, stop)
	}
	start := time.Now()
	b0 := cl.bytes.Load()
	for time.Since(start) < cfg.Duration {
		time.Sleep(250 * time.Millisecond)
		if rss, _ := procStats(p.pid()); rss > res.ProxyRSSMax {
			res.ProxyRSSMax = rss
		}
	}
	res.MBytesPerS = float64(cl.bytes.Load()-b0) / time.Since(start).Seconds() / 1e6
	close(stop)
	done := make(chan struct{})
	go func() { sr.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	res.SlowDisconnected = sr.disconnected.Load()
	res.SlowCut = sr.cut.Load()
	res.SlowDrained = sr.drained.Load()
	res.BadData += sr.bad.Load()
}
