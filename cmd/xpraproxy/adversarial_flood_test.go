package main

// The adversarial suite's flood cases (issue 25): servers that flood
// clients which read nothing, or very slowly. Flow control (relay/flow.go,
// loop/park.go) must slow the servers instead of buffering their floods:
// the proxy's RSS stays flat, the sessions are slowed, not cut (the
// stall timeout is 60 s, the hold 6 s), the neighbour session echoes and
// a correct login works meanwhile; a flooded session whose client sends
// a malformed frame while its server is parked ends, alone.
//
// The flooding servers are xpratest servers (["stream", count, size]
// makes them send count draws of size bytes) behind a counting
// forwarder, floodTarget: the database's users reach the servers through
// it, so that the test sees for each session how many bytes its server
// got out toward the proxy, and whether the proxy still holds the
// session's server connection (a session the proxy cut closes it).

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
)

const (
	floodSessions = 80      // flooded sessions a case holds
	floodCount    = 400     // draws each server is asked for
	floodSize     = 250_000 // pixel bytes in each: 100 MB a session, 8 GB a case
	floodHold     = 6 * time.Second
	// floodSlowGap is a slow reader's pause after each draw: 4 draws,
	// 1 MB, a second.
	floodSlowGap = 250 * time.Millisecond
	// floodBudgetMB is the cases' stated bound: --max-buffer-total=512M
	// and 15% for the runtime, what the global budget promises even
	// without flow control.
	floodBudgetMB = 589
	// floodTightMB and floodTightBridgedMB are what flow control holds
	// the growth to: a paused session holds at most highWater+flushStep
	// (48 KiB) queued, plus what gnet had read from the parked socket
	// (parkAt and one 64 KiB read) and, bridged, a packet held whole and
	// its encoding; and the garbage collector's headroom. Measured on
	// two cores for the 82 sessions, in both modes: +12-15 MB relayed as
	// is, up to +40 MB bridged (with 128 KiB marks and 256 KiB reads it
	// was +53-57 and +66-68 MB).
	floodTightMB        = 40
	floodTightBridgedMB = 100
	// floodStillMB: in the second half of the hold a still session's
	// server gets out at most this much (its floods were stopped by
	// TCP, every buffer on the way full); and once a still client reads
	// again its server must get this much more out (the proxy read its
	// parked socket again).
	floodStillMB = 1
	// floodResumeSample: every so many still sessions is read after the
	// hold until its server is read again (each reads through what the
	// kernel's buffers hold, tens of MB); the others read a few draws.
	floodResumeSample = 4
)

// floodTargets are the siege's flooding servers: plain (of the client's
// generation, relayed as is) and six (6.x-shaped: a 3.1 client's session
// to it is bridged).
type floodTargets struct{ plain, six *floodTarget }

func startFloodTargets(t *testing.T) *floodTargets {
	return &floodTargets{plain: startFloodTarget(t, xpratest.ServerOptions{}),
		six: startFloodTarget(t, xpratest.ServerOptions{Only: frame.RencodePlus})}
}

// floodTarget is an xpratest server behind a forwarder that counts what
// the server sends on each connection.
type floodTarget struct {
	srv   *xpratest.Server
	ln    net.Listener
	mu    sync.Mutex
	conns []*floodConn
	open  map[net.Conn]struct{}
}

// floodConn is one connection through the forwarder.
type floodConn struct {
	down  atomic.Int64  // bytes the server got out toward the proxy
	ended chan struct{} // closed once the connection ended
}

func startFloodTarget(t *testing.T, o xpratest.ServerOptions) *floodTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &floodTarget{srv: xpratest.NewServer(t, o), ln: ln, open: map[net.Conn]struct{}{}}
	t.Cleanup(f.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.forward(c)
		}
	}()
	return f
}

// URL is the forwarder as a displays entry.
func (f *floodTarget) URL() string { return "tcp://" + f.ln.Addr().String() + "/" }

func (f *floodTarget) forward(c net.Conn) {
	up, err := net.Dial("tcp", f.srv.Addr())
	if err != nil {
		c.Close()
		return
	}
	fc := &floodConn{ended: make(chan struct{})}
	f.mu.Lock()
	f.conns = append(f.conns, fc)
	f.open[c], f.open[up] = struct{}{}, struct{}{}
	f.mu.Unlock()
	end := func() {
		c.Close()
		up.Close()
	}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				m, werr := c.Write(buf[:n])
				fc.down.Add(int64(m))
				if werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		end()
	}()
	io.Copy(up, c) // until the proxy closes its end (or the server its)
	end()
	close(fc.ended)
	f.mu.Lock()
	delete(f.open, c)
	delete(f.open, up)
	f.mu.Unlock()
}

// latest is the connection accepted last: a login's, when logins are
// made one after another (a bridged first login dials twice; the
// refused dial comes first).
func (f *floodTarget) latest() *floodConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.conns) == 0 {
		return nil
	}
	return f.conns[len(f.conns)-1]
}

func (f *floodTarget) close() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.open {
		c.Close()
	}
}

// floodSession is one flooded session of a case.
type floodSession struct {
	c      *xpratest.Client
	fc     *floodConn
	id     int
	slow   bool  // reads a draw every floodSlowGap during the hold
	next   int   // the draw expected next
	err    error // why a slow reader stopped
	atHold int64 // fc.down at the end of the hold
}

// readDraw reads up to the next draw and checks that it is the one
// expected next, whole.
func (fs *floodSession) readDraw(timeout time.Duration) error {
	for {
		p, err := fs.c.Recv(timeout)
		if err != nil {
			return fmt.Errorf("after %d draws: %w", fs.next, err)
		}
		switch p.Type() {
		case "draw":
		case "disconnect":
			return fmt.Errorf("after %d draws: disconnected: %s", fs.next, truncate(words(p), 200))
		default:
			continue // a 6.x server's encodings
		}
		px, _ := frame.AsBytes(p[7])
		seq, _ := frame.AsInt(p[8])
		b := byte(fs.next)
		if len(px) != floodSize || seq != int64(fs.next) || px[0] != b || px[len(px)/2] != b || px[len(px)-1] != b {
			return fmt.Errorf("draw %d: %d bytes, sequence %v", fs.next, len(px), p[8])
		}
		fs.next++
		return nil
	}
}

// sampleRSS samples the proxy's RSS until the returned func is called,
// which returns the peak (with VmHWM, which attack reset, for a single
// process).
func (s *siege) sampleRSS() func() int64 {
	stop, out := make(chan struct{}), make(chan int64, 1)
	go func() {
		var most int64
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			most = max(most, s.rss())
			select {
			case <-stop:
				out <- most
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		peak := <-out
		if !s.tree {
			peak = max(peak, procStatus(s.pid, "VmHWM"))
		}
		return peak
	}
}

// floodCase: floodSessions sessions (3.1 clients; to the 6.x-shaped
// server, bridged, when six), each asking its server for 100 MB of draws
// at once; half read nothing for floodHold, half a draw every
// floodSlowGap. Two more flooded sessions send a malformed frame while
// their servers are parked. 80 bridged sessions fit the two-core machine
// (each draw is decoded and encoded again only when a client reads it).
func floodCase(six bool) func(s *siege) string {
	return func(s *siege) string {
		name, ft, user := "flood", s.flood.plain, "flood"
		malformed := bytes.Repeat([]byte{0xff}, 4096) // not a frame header
		if six {
			name, ft, user = "bridged flood", s.flood.six, "flood6"
			// A frame header then what is not rencode: the bridge's
			// decoder refuses it.
			body := []byte("\x00\x01\x02not rencode")
			malformed = append(frame.Header{Flags: frame.FlagRencode, Size: uint32(len(body))}.Append(nil), body...)
		}
		logFrom := len(s.p.logText())
		before := s.rss()
		peak := s.sampleRSS()
		var all []*floodSession
		defer func() {
			for _, fs := range all {
				fs.c.Close()
			}
		}()
		began := time.Now()
		for i := range floodSessions + 2 {
			c, p, err := s.login(user, "fpw")
			if err != nil || p.Type() != "hello" {
				if c != nil {
					c.Close()
				}
				s.failf("%s: login %d: %v %v", name, i, err, truncate(words(p), 200))
				peak()
				return fmt.Sprintf("login %d of %d failed", i, floodSessions+2)
			}
			all = append(all, &floodSession{c: c, fc: ft.latest(), id: i, slow: i%2 == 1})
		}
		loggedIn := time.Since(began)
		// What the sessions cost before their floods, for the report.
		time.Sleep(200 * time.Millisecond)
		idle := s.rss() - before
		sessions, bad := all[:floodSessions], all[floodSessions:]
		held := time.Now()
		for _, fs := range all {
			if err := fs.c.Send(frame.Packet{"stream", floodCount, floodSize}); err != nil {
				s.failf("%s: asking for the flood: %v", name, err)
			}
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		for _, fs := range sessions {
			if !fs.slow {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					if fs.err = fs.readDraw(10 * time.Second); fs.err != nil {
						return
					}
					time.Sleep(floodSlowGap)
				}
			}()
		}

		// While the floods are on: the malformed frames, a correct login
		// and the neighbour.
		time.Sleep(time.Second)
		for _, b := range bad {
			b.c.Conn.Write(malformed)
		}
		badAt := time.Now()
		// The floods' first seconds move what the kernel's buffers take
		// (GBs for 80 sessions) through the proxy: on a two-core machine
		// shared with other tests (CI runs packages side by side) a login
		// then waits seconds for its turn on the loops; after the case
		// attack() asks for the usual 3 s.
		s.correctLoginWithin("during "+name, 15*time.Second)
		if err := s.neighbour.Ping(15 * time.Second); err != nil {
			s.failf("%s: the neighbour does not echo during the floods: %v", name, err)
		}
		badTook := time.Duration(0)
		for i, b := range bad {
			select {
			case <-b.fc.ended:
			case <-time.After(time.Until(badAt.Add(20 * time.Second))):
				s.failf("%s: malformed session %d: the proxy still holds its server connection after 20 s", name, i)
			}
			badTook = max(badTook, time.Since(badAt))
			// The client is closed too, after what was queued for it.
			b.c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, b.c.Conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				s.failf("%s: malformed session %d: the client connection is still open after 10 s", name, i)
			}
		}
		time.Sleep(time.Until(held.Add(floodHold / 2)))
		mid := make([]int64, len(sessions))
		for i, fs := range sessions {
			mid[i] = fs.fc.down.Load()
		}
		time.Sleep(time.Until(held.Add(floodHold)))

		// The end of the hold: every session still holds its server
		// connection (none was cut), and no still session's server got
		// out more than the buffers on the way hold.
		cut := 0
		var total, stillMost, lateMost int64
		for i, fs := range sessions {
			fs.atHold = fs.fc.down.Load()
			select {
			case <-fs.fc.ended:
				cut++
			default:
			}
			total += fs.atHold
			if !fs.slow {
				stillMost = max(stillMost, fs.atHold)
				lateMost = max(lateMost, fs.atHold-mid[i])
			}
		}
		stop.Store(true)
		wg.Wait()
		if cut > 0 {
			s.failf("%s: %d of %d flooded sessions cut during the %v hold", name, cut, floodSessions, floodHold)
		}
		// What a still session's server got out is what the buffers on
		// the way hold: the forwarder's and proxy's send buffers, the
		// proxy's and client's receive buffers (the kernel's maxima) and
		// the proxy's own; less than the flood, which the proxy would
		// otherwise have taken.
		if path := socketPathBytes() + 1<<20; stillMost > min(path, floodCount*floodSize-1) {
			s.failf("%s: a still session's server got %d MB out in the hold (socket buffers on the way: %d MB): not slowed", name, stillMost>>20, path>>20)
		}
		// On a loaded machine the kernel's buffers may still be filling
		// in the hold's second half: then the floods must stop within a
		// few seconds more (no still session's server getting more than
		// 64 KB out in half a second).
		// When the proxy is slow (bridging 80 floods in a worker while CI
		// runs other packages) the buffers may take longer still to fill:
		// what shows flow control is the bound above (the proxy took less
		// than the sockets on the way hold), so this is reported, not
		// failed.
		if lateMost > floodStillMB<<20 && !s.floodsSettle(sessions, 10*time.Second) {
			s.t.Logf("%s: a still session's server got %d KB out in the hold's second half and was still sending 10 s later (the kernel's buffers still filling)", name, lateMost>>10)
		}
		slowDraws, slowLeast := 0, floodCount
		for _, fs := range sessions {
			if !fs.slow {
				continue
			}
			if fs.err != nil {
				s.failf("%s: a slow reader: %v", name, fs.err)
			}
			slowDraws += fs.next
			slowLeast = min(slowLeast, fs.next)
		}
		if slowLeast == 0 {
			s.failf("%s: a slow reader read no draw in the hold", name)
		}
		log := s.p.logText()[logFrom:]
		for _, w := range []string{"connection too slow", "peer stopped reading"} {
			if n := strings.Count(log, w); n > 0 {
				s.failf("%s: the log says %q %d times", name, w, n)
			}
		}

		// Then every session reads on: the draws come in order, whole,
		// and a sample of the still sessions' servers get more out once
		// their clients read (the proxy reads the parked sockets again).
		reading := time.Now()
		var mu sync.Mutex
		var resumeMost int64
		var resumeSlowest time.Duration
		var errs []string
		parallelDo(sessions, func(fs *floodSession) {
			fail := func(err error) {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
			}
			deadline := time.Now().Add(15 * time.Second)
			from := fs.next
			for range 4 {
				if err := fs.readDraw(time.Until(deadline)); err != nil {
					fail(err)
					return
				}
			}
			if fs.slow || fs.id%(2*floodResumeSample) != 0 {
				return
			}
			for fs.fc.down.Load() < fs.atHold+floodStillMB<<20 {
				if err := fs.readDraw(time.Until(deadline)); err != nil {
					fail(fmt.Errorf("still session resuming: %w", err))
					return
				}
			}
			mu.Lock()
			resumeMost = max(resumeMost, int64(fs.next-from)*floodSize)
			resumeSlowest = max(resumeSlowest, time.Since(reading))
			mu.Unlock()
		})
		readTook := time.Since(reading)
		if len(errs) > 0 {
			slices.Sort(errs)
			s.failf("%s: %d sessions after the hold: %s", name, len(errs), strings.Join(errs[:min(3, len(errs))], "; "))
		}
		for _, fs := range all {
			fs.c.Close()
		}
		growth, tight := peak()-before, int64(floodTightMB)
		if six {
			tight = floodTightBridgedMB
		}
		if growth > tight<<10 {
			s.failf("%s: RSS grew by %d KB: flow control should hold it under %d MB", name, growth, tight)
		}
		return fmt.Sprintf("%d sessions (logged in in %v) asked for %d MB each; in the %v hold the servers got %d MB out in all "+
			"(a still session's at most %.1f MB, %.1f MB in the hold's second half), %d cut; the slow readers read %d draws (each at least %d); "+
			"2 malformed frames ended their sessions within %v; after the hold a still client read at most %.1f MB before its server was read again "+
			"(the slowest in %v; the reads took %v); RSS +%d MB during the case (bound %d MB; %+d MB with the sessions logged in, before the floods)",
			floodSessions, loggedIn.Round(100*time.Millisecond), floodCount*floodSize>>20, floodHold, total>>20,
			float64(stillMost)/(1<<20), float64(lateMost)/(1<<20), cut, slowDraws, slowLeast,
			badTook.Round(100*time.Millisecond), float64(resumeMost)/(1<<20), resumeSlowest.Round(100*time.Millisecond), readTook.Round(100*time.Millisecond),
			growth>>10, tight, idle>>10)
	}
}

// socketPathBytes is what the kernel may buffer between a flooding
// server and its client: two TCP connections (forwarder to proxy, proxy
// to client), each with a send and a receive buffer at their maxima.
func socketPathBytes() int64 {
	most := func(file string) int64 {
		b, _ := os.ReadFile(file)
		f := strings.Fields(string(b))
		if len(f) != 3 {
			return 32 << 20
		}
		n, _ := strconv.ParseInt(f[2], 10, 64)
		return n
	}
	return 2 * (most("/proc/sys/net/ipv4/tcp_rmem") + most("/proc/sys/net/ipv4/tcp_wmem"))
}

// parallelDo runs f for each session at once.
func parallelDo(sessions []*floodSession, f func(fs *floodSession)) {
	var wg sync.WaitGroup
	for _, fs := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(fs)
		}()
	}
	wg.Wait()
}

// floodsSettle waits up to d for every still session's server to stop
// getting bytes out.
func (s *siege) floodsSettle(sessions []*floodSession, d time.Duration) bool {
	before := make([]int64, len(sessions))
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i, fs := range sessions {
			before[i] = fs.fc.down.Load()
		}
		time.Sleep(500 * time.Millisecond)
		settled := true
		for i, fs := range sessions {
			if !fs.slow && fs.fc.down.Load()-before[i] > 64<<10 {
				settled = false
			}
		}
		if settled {
			return true
		}
	}
	return false
}
