package loop

import (
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// spliceBound is what a root proxy's supervisor may hold for one
// paused splice: the high-water mark, one move (a gnet read), what gnet
// read of the paused source before it was parked, and the spare room of
// the TLS layer's plaintext buffer; doubled for room.
const spliceBound = 2 * (spliceHigh + 64<<10 + parkAt + 64<<10 + 64<<10)

// rootSpliceClient logs a client in through a root road, over TLS or as
// a stream, and waits until the worker relays its session.
func rootSpliceClient(t *testing.T, road *rootRoad, kind string) *testClient {
	t.Helper()
	var tc *testClient
	if kind == "tls" {
		tc = tlsClient(t, road.addr, nil)
	} else {
		st, c := pipeStream(t)
		c.Writer = frame.Writer{Encoding: frame.Rencode}
		if err := road.main.ServeStream(st, StreamOptions{Remote: streamAddr, Config: road.main.listeners[0].Config}); err != nil {
			t.Fatal(err)
		}
		tc = c
	}
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %s", p)
	}
	waitFor(t, "the worker's session", func() bool { return road.worker.Sessions() == 1 })
	waitFor(t, "the splice", func() bool { return statInt(road.main.Stats(), "spliced") == 1 })
	return tc
}

// As root, a client that stops reading is slowed, not cut, over TLS and
// over a stream: the supervisor stops reading the worker's end of the
// splice (which slows the worker's relay, which pauses the server), holds
// no more than the high-water mark and a step, and once the client reads
// it gets every draw intact.
func TestRootSpliceSlowReader(t *testing.T) {
	for _, kind := range []string{"tls", "stream"} {
		t.Run(kind, func(t *testing.T) {
			fs := startFakeServer(t, "")
			road := startRootRoad(t, "tcp://"+fs.Addr()+"/", Options{SweepInterval: 10 * time.Millisecond, FullSweepEvery: 1})
			slow := rootSpliceClient(t, road, kind)
			const draws, size = 100, 250_000
			slow.send(frame.Packet{"stream", draws, size}) // 25 MB the client does not read for 2 s
			var peak int64
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
				peak = max(peak, road.main.Buffered())
				select {
				case <-fs.Ended():
					t.Fatal("the slow session was ended")
				case <-time.After(10 * time.Millisecond):
				}
			}
			t.Logf("peak held by the supervisor: %d bytes (bound %d)", peak, spliceBound)
			if peak > spliceBound {
				t.Errorf("the supervisor held %d bytes while the client did not read (bound %d)", peak, spliceBound)
			}
			if road.main.Parks() == 0 {
				t.Error("the worker's end of the splice was never parked")
			}
			if got := statInt(road.main.Stats(), "spliced"); got != 1 {
				t.Fatalf("the splice ended while its client was slow (%d spliced)", got)
			}
			slow.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			for i := range draws {
				p, err := slow.ReadPacket()
				if err != nil {
					t.Fatalf("draw %d: %v", i, err)
				}
				data, _ := p[7].([]byte)
				if p.Type() != "draw" || len(data) != size || data[0] != byte(i) || data[size-1] != byte(i) || p[8] != int64(i) {
					t.Fatalf("draw %d: %s", i, p)
				}
			}
			slow.send(frame.Packet{"ping", 1, 2, "x"})
			if p := slow.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("after the draws: %v", p)
			}
		})
	}
}

// As root, a client that uploads faster than its server reads is slowed
// the other way: the worker's relay stops reading its end of the splice,
// the supervisor stops reading the client (its TLS socket parked, or its
// stream left to its window) and every byte arrives once the server
// reads again.
func TestRootSpliceUploadSlowed(t *testing.T) {
	for _, kind := range []string{"tls", "stream"} {
		t.Run(kind, func(t *testing.T) {
			fs := startFakeServer(t, "")
			road := startRootRoad(t, "tcp://"+fs.Addr()+"/", Options{SweepInterval: 10 * time.Millisecond, FullSweepEvery: 1})
			tc := rootSpliceClient(t, road, kind)
			tc.Conn.SetDeadline(time.Now().Add(60 * time.Second))
			const uploads, size = 40, 256 << 10
			tc.send(frame.Packet{"nap", 1500})
			sent := make(chan error, 1)
			go func() {
				data := make([]byte, size)
				for range uploads {
					if err := tc.send(frame.Packet{"upload", data}); err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()
			const want = uploads * size
			var peak int64
			for deadline := time.Now().Add(30 * time.Second); fs.Uploaded() < want && time.Now().Before(deadline); {
				peak = max(peak, road.main.Buffered())
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("peak held by the supervisor: %d bytes", peak)
			// A stream's bytes wait in its window (1 MiB) rather than
			// its transport's.
			bound := int64(spliceBound)
			if kind == "stream" {
				bound += streamWindow + streamBig
			}
			if peak > bound {
				t.Errorf("the supervisor held %d bytes while the server napped (bound %d)", peak, bound)
			}
			if kind == "tls" && road.main.Parks() == 0 {
				t.Error("the client's socket was never parked")
			}
			if got := fs.Uploaded(); got != want {
				t.Fatalf("the server received %d upload bytes of %d", got, want)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			tc.send(frame.Packet{"ping", 1, 2, "x"})
			if p := tc.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("after the upload: %v", p)
			}
		})
	}
}

// As root, a client that reads nothing at all is still cut after the
// stall timeout, by the worker's relay, with the reason: the supervisor
// held the rest in the worker's socket, and the client that reads again
// gets what was relayed and then the disconnect; over TLS and a stream.
func TestRootSpliceStalledReaderCut(t *testing.T) {
	for _, kind := range []string{"tls", "stream"} {
		t.Run(kind, func(t *testing.T) { stalledThroughSplice(t, kind) })
	}
}

func stalledThroughSplice(t *testing.T, kind string) {
	fs := startFakeServer(t, "")
	road := startRootRoadLimits(t, "tcp://"+fs.Addr()+"/", Options{SweepInterval: 10 * time.Millisecond, FullSweepEvery: 1},
		func(l *relay.Limits) { l.StallTimeout = time.Second })
	slow := rootSpliceClient(t, road, kind)
	slow.send(frame.Packet{"stream", 400, 250_000})
	var peak int64
	start := time.Now()
	ended := false
	for time.Since(start) < 20*time.Second && !ended {
		peak = max(peak, road.main.Buffered())
		select {
		case <-fs.Ended():
			ended = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !ended {
		t.Fatalf("the stalled session was never ended (peak held by the supervisor %d)", peak)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("cut after %v, before the stall timeout", d)
	}
	if peak > spliceBound {
		t.Errorf("the supervisor held %d bytes (bound %d)", peak, spliceBound)
	}
	slow.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var last frame.Packet
	for {
		p, err := slow.ReadPacket()
		if err != nil {
			break
		}
		last = p
	}
	expectDisconnect(t, last, "connection too slow")
	waitFor(t, "the splice to end", func() bool { return statInt(road.main.Stats(), "spliced") == 0 })
}

// A client that never reads again: after the worker has given up on its
// reason (stall timeout, the packet's rest, its drain), the supervisor
// ends the paused splice too, so that nothing is held for it forever.
func TestRootSpliceNeverRead(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 21 s")
	}
	fs := startFakeServer(t, "")
	road := startRootRoadLimits(t, "tcp://"+fs.Addr()+"/", Options{}, func(l *relay.Limits) { l.StallTimeout = time.Second })
	slow := rootSpliceClient(t, road, "tls")
	slow.send(frame.Packet{"stream", 400, 250_000})
	start := time.Now()
	for statInt(road.main.Stats(), "spliced") != 0 {
		if time.Since(start) > 40*time.Second {
			t.Fatal("the splice of a client that reads nothing was never ended")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := time.Since(start); d < time.Second+2*drainTime {
		t.Errorf("the splice ended after %v, before the worker gave up on the client", d)
	}
	waitFor(t, "the worker's session to end", func() bool { return road.worker.Sessions() == 0 })
	if n := statInt(road.main.Stats(), "connections"); n != 0 {
		t.Errorf("main process still counts %d connections", n)
	}
}
