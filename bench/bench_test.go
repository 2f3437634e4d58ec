package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
)

// buildProxy builds the xpraproxy binary under test into a directory that
// nobody (the user the proxy runs as when we are root) can read.
func buildProxy(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "xpraproxy-bench-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "xpraproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/xpraproxy").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestWorkloads runs every workload through every proxy kind, briefly,
// so that the load tool cannot rot: sessions open, data arrives intact,
// and each workload's figure is measured.
func TestWorkloads(t *testing.T) {
	for _, bin := range []string{"/usr/sbin/haproxy", "/usr/bin/xpra"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing: the README's test command installs it: %v", bin, err)
		}
	}
	bin := buildProxy(t)
	proxies := []string{ProxyXpraproxy, ProxyHAProxy, ProxyDirect, ProxyXpra}
	if os.Geteuid() == 0 {
		proxies = append(proxies, ProxyXpraproxyRoot) // CI runs as root
	}
	for _, proxy := range proxies {
		for _, workload := range []string{WorkloadIdle, WorkloadStream, WorkloadPingPong, WorkloadConnect} {
			t.Run(proxy+"/"+workload, func(t *testing.T) {
				sessions := 4
				if proxy == ProxyXpra {
					sessions = 2 // a 50 MB process each
				}
				res, err := Run(Config{Proxy: proxy, Workload: workload, Sessions: sessions, Duration: 700 * time.Millisecond,
					Size: 16 << 10, Verify: true, Interval: 20 * time.Millisecond, Binary: bin})
				if err != nil {
					t.Fatal(err)
				}
				if workload != WorkloadConnect && res.Ready != int64(sessions) {
					t.Fatalf("%d of %d sessions ready (%s)", res.Ready, sessions, res.LastError)
				}
				if res.BadData != 0 {
					t.Fatalf("%d draws corrupted or out of order", res.BadData)
				}
				switch workload {
				case WorkloadStream:
					if res.MBytesPerS <= 0 {
						t.Errorf("no throughput: %+v", res)
					}
				case WorkloadPingPong:
					if res.Samples == 0 || res.P50us <= 0 || res.P99us < res.P50us {
						t.Errorf("latency: %+v", res)
					}
				case WorkloadConnect:
					if res.SetupsPerS <= 0 {
						t.Errorf("no setups: %+v", res)
					}
				case WorkloadIdle:
					if proxy != ProxyDirect && res.ProxyRSS <= 0 {
						t.Errorf("no proxy RSS: %+v", res)
					}
					// As root the relays are the workers': they count.
					if proxy == ProxyXpraproxyRoot && (res.ProxyProcesses < 2 || !strings.Contains(res.ProxyCounted, "xpraproxy worker")) {
						t.Errorf("root proxy: counted %q (%d processes)", res.ProxyCounted, res.ProxyProcesses)
					}
				}
				// With 4 sessions the per-session difference is noise; the
				// figure must at least be readable.
				if strings.HasPrefix(proxy, ProxyXpraproxy) && workload == WorkloadIdle && res.ProxyHeap <= 0 {
					t.Errorf("no heap figure from xpraproxy's info: %+v", res)
				}
			})
		}
	}
}

// TestTransports: the generator reaches xpraproxy over ws, ssl, wss, ssh
// and xpra's AES on its one port (quic on its UDP port number), and draws
// arrive intact. The AES rows' proxy runs with --tcp-encryption=AES, which
// refuses clear clients: a ready session is an encrypted one.
func TestTransports(t *testing.T) {
	bin := buildProxy(t)
	for _, c := range []struct{ transport, peer string }{{TransportWS, Peer31}, {TransportSSL, Peer31},
		{TransportWSS, Peer31}, {TransportQUIC, Peer31}, {TransportSSH, Peer31},
		{TransportAES, Peer31}, {TransportAES, Peer6}, {TransportAESCTR, Peer6}} {
		t.Run(c.transport+"/"+c.peer, func(t *testing.T) {
			res, err := Run(Config{Proxy: ProxyXpraproxy, Workload: WorkloadStream, Sessions: 3, Duration: 500 * time.Millisecond,
				Size: 16 << 10, Verify: true, Binary: bin, Transport: c.transport, Peer: c.peer})
			if err != nil {
				t.Fatal(err)
			}
			if res.Ready != 3 || res.BadData != 0 || res.MBytesPerS <= 0 || res.Transport != c.transport {
				t.Fatalf("%+v", res)
			}
		})
	}
}

// TestSoak: streams stay intact while slow readers are flooded by their
// servers: flow control slows the floods, so the slow readers are never
// cut and read every byte once they speed up, and RSS stays bounded.
func TestSoak(t *testing.T) {
	bin := buildProxy(t)
	res, err := Run(Config{Proxy: ProxyXpraproxy, Workload: WorkloadSoak, Sessions: 20, Slow: 2, Size: 4096, Window: 2,
		Duration: 2 * time.Second, Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	if res.BadData != 0 || res.Ready != 20 || res.MBytesPerS <= 0 {
		t.Fatalf("%+v", res)
	}
	if res.SlowDrained != 2 || res.SlowDisconnected != 0 || res.SlowCut != 0 {
		t.Errorf("slow readers: %d disconnected with a reason, %d cut, %d drained", res.SlowDisconnected, res.SlowCut, res.SlowDrained)
	}
	if limit := res.ProxyRSSBaseline + 128<<20; res.ProxyRSSMax > limit {
		t.Errorf("proxy RSS reached %d bytes (baseline %d)", res.ProxyRSSMax, res.ProxyRSSBaseline)
	}
}

// TestSoakAcrossUpgrade: the checksummed soak with an upgrade in its
// middle loses and corrupts no draw and closes no client; the sessions go
// to the new process (a slow reader that cannot catch up within 2 s may
// stay in the old one, and reads everything there).
func TestSoakAcrossUpgrade(t *testing.T) {
	bin := buildProxy(t)
	res, err := Run(Config{Proxy: ProxyXpraproxy, Workload: WorkloadSoak, Sessions: 40, Slow: 2, Size: 4096, Window: 2,
		Duration: 4 * time.Second, UpgradeAt: 1500 * time.Millisecond, Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	if res.UpgradeError != "" || res.UpgradeHanded < 40 || res.UpgradeHanded+res.UpgradeKept != 42 {
		t.Fatalf("upgrade: %d handed, %d kept, error %q", res.UpgradeHanded, res.UpgradeKept, res.UpgradeError)
	}
	if res.BadData != 0 || res.ClientsClosed != 0 || res.Ready != 40 || res.MBytesPerS <= 0 {
		t.Fatalf("across the upgrade: %d bad draws, %d clients closed: %+v", res.BadData, res.ClientsClosed, res)
	}
	if res.SlowDrained != 2 || res.SlowDisconnected != 0 || res.SlowCut != 0 {
		t.Errorf("slow readers: %d disconnected with a reason, %d cut, %d drained", res.SlowDisconnected, res.SlowCut, res.SlowDrained)
	}
}

// TestPeers: 6.x-shaped peers (rencodeplus, nested hellos, lz4 frames)
// and real-size hellos of both generations stream intact through
// xpraproxy and HAProxy, and connect.
func TestPeers(t *testing.T) {
	for peer, least := range map[string]int{Peer31: 60 << 10, Peer6: 4 << 10} {
		h, err := realHello(peer)
		w := frame.Writer{Encoding: frame.Rencode}
		if peer == Peer6 {
			w.Encoding = frame.RencodePlus
		}
		b, _ := w.AppendPacket(nil, frame.Packet{"hello", h})
		t.Logf("real %s hello: %d bytes encoded, uncompressed", peer, len(b))
		if err != nil || len(b) < least {
			t.Fatalf("the captured %s hello is %d bytes (%v)", peer, len(b), err)
		}
	}
	bin := buildProxy(t)
	for _, peer := range []string{Peer31, Peer6} {
		for _, real := range []bool{false, true} {
			for _, proxy := range []string{ProxyXpraproxy, ProxyHAProxy} {
				t.Run(fmt.Sprintf("%s/real=%v/%s", peer, real, proxy), func(t *testing.T) {
					res, err := Run(Config{Proxy: proxy, Workload: WorkloadStream, Sessions: 3, Duration: 500 * time.Millisecond,
						Size: 16 << 10, Verify: true, Binary: bin, Peer: peer, RealHello: real})
					if err != nil {
						t.Fatal(err)
					}
					if res.Ready != 3 || res.BadData != 0 || res.MBytesPerS <= 0 || res.Peer != peer {
						t.Fatalf("%+v", res)
					}
				})
			}
		}
		res, err := Run(Config{Proxy: ProxyXpraproxy, Workload: WorkloadConnect, Sessions: 4, Duration: 500 * time.Millisecond,
			Binary: bin, Peer: peer, RealHello: true})
		if err != nil || res.SetupsPerS <= 0 || res.Failed != 0 {
			t.Fatalf("connect with real %s hellos: %+v %v", peer, res, err)
		}
	}
	if _, err := Run(Config{Proxy: ProxyXpra, Workload: WorkloadIdle, Peer: Peer6}); err == nil {
		t.Error("xpra's 3.1.3 proxy accepted 6.x peers")
	}
}
