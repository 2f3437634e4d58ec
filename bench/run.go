package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/sshd"
)

// Workloads.
const (
	WorkloadIdle     = "idle"
	WorkloadStream   = "stream"
	WorkloadPingPong = "pingpong"
	WorkloadConnect  = "connect"
)

// Config is one benchmark run.
type Config struct {
	Proxy     string        // xpraproxy, xpra, haproxy, direct
	Workload  string        // idle, stream, pingpong, connect
	Sessions  int           // simulated clients (concurrency for connect)
	Duration  time.Duration // length of the measured phase
	Size      int           // draw payload bytes (stream)
	Window    int           // draws in flight per session (stream)
	Interval  time.Duration // time between pings per session (pingpong)
	Verify    bool          // crc-check every draw (stream)
	Slow      int           // slow readers flooded by their server (soak)
	ProxyArgs []string      // extra options for xpraproxy
	Loops     int           // event loops of the generator and the simulated server each
	Sources   int           // loopback source addresses (127.0.0.2 ...)
	Binary    string        // the xpraproxy binary under test
	Transport string        // tcp (default), ws, ssl, wss, ssh, quic, aes, aes-ctr: how clients reach xpraproxy
	Peer      string        // "3.1" (default) or "6.x": the simulated peers' xpra generation (peer.go)
	// ServerPeer, when set and not Peer, is the simulated server's own
	// generation: it refuses the client's, and xpraproxy bridges.
	ServerPeer string
	RealHello  bool // clients send a real client's captured hello
	// Users is the user database xpraproxy authenticates against: "" for
	// a sqlite file (as xpra's proxy), or a postgresql:// or mysql:// URI
	// (the sql module; the users are written there first).
	Users string
	// UpgradeAt, when set, upgrades xpraproxy this far into the measured
	// phase (upgrade.go).
	UpgradeAt time.Duration
	Dir       string // scratch directory (made if empty)
	Log       func(format string, args ...any)
}

// Result is what a run measured; the JSON names are the contract with
// BENCHMARKS.md and scripts. The proxy's memory and CPU are those of the
// process the bench started and all its descendants (xpraproxy-root: the
// supervisor and its workers; xpra: its forked instances), summed;
// ProxyCounted says which processes the end-of-run figures cover.
type Result struct {
	Proxy              string  `json:"proxy"`
	Transport          string  `json:"transport,omitempty"`
	Peer               string  `json:"peer,omitempty"`
	ServerPeer         string  `json:"server_peer,omitempty"`
	RealHello          bool    `json:"real_hello,omitempty"`
	Workload           string  `json:"workload"`
	Sessions           int     `json:"sessions"`
	Ready              int64   `json:"ready"`
	Failed             int64   `json:"failed"`
	DurationS          float64 `json:"duration_s"`
	ProxyRSSBaseline   int64   `json:"proxy_rss_baseline_bytes"`
	ProxyRSS           int64   `json:"proxy_rss_bytes"`
	ProxyRSSPerSession float64 `json:"proxy_rss_bytes_per_session"` // at the end of the run: steady state for idle
	// PSS (proportional set size, smaps_rollup) divides each shared page
	// among the processes mapping it: beside the RSS sum it shows how much
	// of a process tree's RSS is pages counted in more than one process.
	ProxyPSSBaseline       int64   `json:"proxy_pss_baseline_bytes,omitempty"`
	ProxyPSS               int64   `json:"proxy_pss_bytes,omitempty"`
	ProxyPSSPerSession     float64 `json:"proxy_pss_bytes_per_session,omitempty"`
	ProxyProcessesBaseline int     `json:"proxy_processes_baseline,omitempty"`
	ProxyProcesses         int     `json:"proxy_processes,omitempty"`
	ProxyCounted           string  `json:"proxy_counted,omitempty"` // "1 xpraproxy proxy + 1 xpraproxy worker"
	// ProxyRSSOpenPerSession is the same right after the sessions opened
	// (the handshake burst's memory not yet returned).
	ProxyRSSOpenPerSession float64 `json:"proxy_rss_open_bytes_per_session,omitempty"`
	ProxyHeap              int64   `json:"proxy_heap_bytes"`
	ProxyHeapPerSession    float64 `json:"proxy_heap_bytes_per_session"`
	ProxyCPUPercent        float64 `json:"proxy_cpu_percent"`
	GeneratorCPUPercent    float64 `json:"generator_cpu_percent"`
	MBytesPerS             float64 `json:"mbytes_per_s"`
	MBytesPerSPerSession   float64 `json:"mbytes_per_s_per_session"`
	P50us                  float64 `json:"p50_us"`
	P99us                  float64 `json:"p99_us"`
	P999us                 float64 `json:"p999_us"`
	Samples                int     `json:"samples"`
	SetupsPerS             float64 `json:"setups_per_s"`
	BadData                int64   `json:"bad_data"`
	ProxyRSSMax            int64   `json:"proxy_rss_max_bytes,omitempty"`
	SlowDisconnected       int64   `json:"slow_disconnected,omitempty"`
	SlowCut                int64   `json:"slow_cut,omitempty"`
	SlowDrained            int64   `json:"slow_drained,omitempty"`
	LastError              string  `json:"last_error,omitempty"`
	// An upgrade during the run (upgrade.go): sessions handed to the new
	// process and kept by the old, the proxy's own time to hand them over,
	// the request's, client connections that closed (any is a session
	// lost), and the longest gap between two draws of one session.
	UpgradeHanded     int     `json:"upgrade_handed,omitempty"`
	UpgradeKept       int     `json:"upgrade_kept,omitempty"`
	UpgradeHandoverMS float64 `json:"upgrade_handover_ms,omitempty"`
	UpgradeRequestMS  float64 `json:"upgrade_request_ms,omitempty"`
	UpgradeError      string  `json:"upgrade_error,omitempty"`
	ClientsClosed     int64   `json:"clients_closed"`
	MaxDrawGapMS      float64 `json:"max_draw_gap_ms,omitempty"`
}

const benchPassword = "bench-password"

func (c *Config) defaults() {
	if c.Peer == "" {
		c.Peer = Peer31
	}
	if c.Sessions <= 0 {
		c.Sessions = 100
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Size <= 0 {
		c.Size = 64 << 10
	}
	if c.Window <= 0 {
		c.Window = 4
	}
	if c.Interval <= 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.Loops <= 0 {
		c.Loops = 1
	}
	if c.Sources <= 0 {
		// bind() before connect takes a port from the source address's
		// whole range, whatever the destination, and closed sessions hold
		// theirs in TIME_WAIT for a minute: spread over addresses.
		c.Sources = 1 + c.Sessions/2000
		if c.Workload == WorkloadConnect {
			// Every setup leaves a TIME_WAIT port behind: one source
			// address would cap setups near 28k ports / 60 s.
			c.Sources = 64
		}
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
}

func rusage() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Run performs one benchmark: simulated servers, the proxy under test as
// its own process, the clients, the workload. It stops by itself.
func Run(cfg Config) (*Result, error) {
	cfg.defaults()
	res := &Result{Proxy: cfg.Proxy, Workload: cfg.Workload, Sessions: cfg.Sessions, Transport: cfg.Transport,
		Peer: cfg.Peer, ServerPeer: cfg.ServerPeer, RealHello: cfg.RealHello}
	dir := cfg.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "xpraproxy-bench-"); err != nil {
			return nil, err
		}
		if os.Getenv("XPRAPROXY_BENCH_KEEP") == "" {
			defer os.RemoveAll(dir)
		} else {
			cfg.Log("keeping %s", dir)
		}
	}
	os.Chmod(dir, 0o777)

	srv := newServer(max(cfg.Size, 60<<10) + 8) // soak floods 60 KiB draws
	switch cfg.ServerPeer {
	case "", cfg.Peer:
	case Peer31:
		srv.only = frame.Rencode
	case Peer6:
		srv.only = frame.RencodePlus
	default:
		return nil, fmt.Errorf("bench: --server-peer=%s: want %s or %s", cfg.ServerPeer, Peer31, Peer6)
	}
	simPort, err := freePort()
	if err != nil {
		return nil, err
	}
	simAddr := fmt.Sprintf("127.0.0.1:%d", simPort)
	stopSim, err := srv.run(simAddr, cfg.Loops)
	if err != nil {
		return nil, err
	}
	defer stopSim()
	users := cfg.Sessions
	if cfg.Proxy == ProxyXpraproxy || cfg.Proxy == ProxyXpraproxyRoot || cfg.Proxy == ProxyXpra {
		if err := writeUsers(dir+"/users.sdb", users, simAddr, benchPassword); err != nil {
			return nil, err
		}
	}
	auth := ""
	if cfg.Users != "" {
		if cfg.Proxy != ProxyXpraproxy && cfg.Proxy != ProxyXpraproxyRoot {
			return nil, fmt.Errorf("bench: --users is for xpraproxy")
		}
		if err := writeSQLUsers(cfg.Users, users, simAddr, benchPassword); err != nil {
			return nil, err
		}
		auth = "sql,uri=" + cfg.Users
	}
	if cfg.Peer != Peer31 && cfg.Peer != Peer6 && cfg.Peer != PeerHTML5 {
		return nil, fmt.Errorf("bench: --peer=%s: want %s, %s or %s", cfg.Peer, Peer31, Peer6, PeerHTML5)
	}
	if cfg.Peer == PeerHTML5 && cfg.RealHello {
		return nil, fmt.Errorf("bench: no captured hello of the %s client", PeerHTML5)
	}
	if cfg.Peer == Peer6 && cfg.Proxy == ProxyXpra {
		// Debian's xpra proxy is 3.1.3: it cannot decode rencodeplus.
		return nil, fmt.Errorf("bench: xpra's 3.1.3 proxy cannot relay 6.x peers")
	}
	tlsPEM := ""
	if cfg.Transport == TransportQUIC && cfg.Proxy != ProxyXpraproxy && cfg.Proxy != ProxyXpraproxyRoot {
		return nil, fmt.Errorf("bench: --transport=quic is for xpraproxy")
	}
	aesKeyFile := ""
	if isAES(cfg.Transport) {
		if cfg.Proxy != ProxyXpraproxy && cfg.Proxy != ProxyXpraproxyRoot {
			return nil, fmt.Errorf("bench: --transport=%s is for xpraproxy", cfg.Transport)
		}
		if cfg.Transport == TransportAESCTR && cfg.Peer != Peer6 {
			return nil, fmt.Errorf("bench: xpra 3.1 has no AES-CTR: use --peer=6.x")
		}
		var args []string
		if aesKeyFile, args, err = aesArgs(dir); err != nil {
			return nil, err
		}
		cfg.ProxyArgs = append(cfg.ProxyArgs, args...)
	} else if cfg.Transport != "" && cfg.Transport != TransportTCP {
		haTLS := cfg.Proxy == ProxyHAProxy && cfg.Transport == TransportSSL
		if cfg.Proxy != ProxyXpraproxy && cfg.Proxy != ProxyXpraproxyRoot && !haTLS {
			// HAProxy in tcp mode terminates TLS, not WebSocket: the
			// simulated server speaks plain xpra.
			return nil, fmt.Errorf("bench: --transport=%s is for xpraproxy (and ssl for haproxy)", cfg.Transport)
		}
		cert, key, err := selfsigned.Write(dir)
		if err != nil {
			return nil, err
		}
		os.Chmod(key, 0o644) // the proxy under test runs as nobody
		if haTLS {
			// HAProxy wants the certificate and its key in one file.
			c, _ := os.ReadFile(cert)
			k, _ := os.ReadFile(key)
			tlsPEM = dir + "/haproxy.pem"
			if err := os.WriteFile(tlsPEM, append(c, k...), 0o600); err != nil {
				return nil, err
			}
		} else {
			cfg.ProxyArgs = append(cfg.ProxyArgs, "--ssl-cert="+cert, "--ssl-key="+key)
		}
		if cfg.Transport == TransportQUIC {
			cfg.ProxyArgs = append(cfg.ProxyArgs, quicBind)
		}
		if cfg.Transport == TransportSSH {
			// The proxy under test (nobody) has no state directory of
			// its own: its host key is made here.
			if _, err := sshd.HostKeys(nil, dir); err != nil {
				return nil, err
			}
			hk := filepath.Join(dir, "ssh_host_ed25519_key")
			os.Chmod(hk, 0o644)
			cfg.ProxyArgs = append(cfg.ProxyArgs, "--ssh-host-key="+hk)
		}
	}
	p, err := startProxy(cfg.Proxy, dir, simAddr, cfg.Binary, cfg.Sessions, auth, tlsPEM, cfg.ProxyArgs)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	time.Sleep(300 * time.Millisecond)
	before := readTree(p.pid(), true)
	res.ProxyRSSBaseline, res.ProxyPSSBaseline, res.ProxyProcessesBaseline = before.RSS, before.PSS, len(before.Procs)
	heap0 := proxyHeap(p)

	cl, err := newClients(cfg.Loops, benchPassword, cfg.Transport, cfg.Peer, cfg.RealHello)
	if err != nil {
		return nil, err
	}
	cl.aesKeyFile = aesKeyFile
	defer cl.stop()
	var (
		mu    sync.Mutex
		conns []*clientConn
	)
	cl.onReady = func(cc *clientConn) {
		if cfg.Workload == WorkloadConnect {
			cc.conn.Close()
			return
		}
		mu.Lock()
		conns = append(conns, cc)
		mu.Unlock()
	}
	// Each run starts at a random loopback address, so that back-to-back
	// runs do not share TIME_WAIT ports.
	base := rand.IntN(1000)
	source := func(i int) string {
		n := base + i%cfg.Sources
		return fmt.Sprintf("127.0.%d.%d", n/250, 2+n%250)
	}
	if cfg.Workload == WorkloadConnect {
		return runConnect(cfg, res, p, cl, source)
	}

	// Open every session, keeping at most 200 handshakes in flight (xpra's
	// proxy refuses more unauthenticated connections than that). xpra's
	// proxy 3.1.3 sometimes never finishes a login among concurrent ones
	// (its instance is not started; seen with 5 at once), so its sessions
	// are opened one at a time.
	inflight := int64(200)
	if cfg.Proxy == ProxyXpra {
		inflight = 1
	}
	cfg.Log("opening %d sessions through %s", cfg.Sessions, cfg.Proxy)
	openStart := time.Now()
	for i := 0; i < cfg.Sessions; i++ {
		for int64(i)-cl.ready.Load()-cl.failed.Load() >= inflight {
			time.Sleep(time.Millisecond)
		}
		cl.open(i, fmt.Sprintf("u%d", i%users), source(i), p.addr)
	}
	deadline := time.Now().Add(60*time.Second + time.Duration(cfg.Sessions)*20*time.Millisecond)
	for cl.ready.Load()+cl.failed.Load() < int64(cfg.Sessions) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	res.Ready, res.Failed = cl.ready.Load(), cl.failed.Load()
	cfg.Log("%d ready, %d failed in %v", res.Ready, res.Failed, time.Since(openStart).Round(time.Millisecond))
	if res.Ready == 0 {
		res.LastError = cl.lastError()
		return res, fmt.Errorf("bench: no session could be opened: %s", res.LastError)
	}

	if rss, _ := procStats(p.pid()); p.pid() > 0 && rss > 0 {
		res.ProxyRSSOpenPerSession = float64(rss-res.ProxyRSSBaseline) / float64(res.Ready)
	}
	cpu0 := rusage()
	_, pcpu0 := procStats(p.pid())
	start := time.Now()
	closed0 := cl.closed.Load()
	upgraded := upgradeDuring(cfg, res, p)
	switch cfg.Workload {
	case WorkloadIdle:
		time.Sleep(cfg.Duration)
	case WorkloadSoak:
		mu.Lock()
		list := append([]*clientConn(nil), conns...)
		mu.Unlock()
		cfg.Verify = true
		soak(cfg, res, p, cl, list)
	case WorkloadStream:
		mu.Lock()
		for _, cc := range conns {
			cc.conn.AsyncWrite(cc.packet(packetStream(cfg)), nil)
		}
		mu.Unlock()
		time.Sleep(cfg.Duration / 5) // ramp up
		b0 := cl.bytes.Load()
		cpu0 = rusage()
		_, pcpu0 = procStats(p.pid())
		start = time.Now()
		time.Sleep(cfg.Duration)
		res.MBytesPerS = float64(cl.bytes.Load()-b0) / time.Since(start).Seconds() / 1e6
		res.MBytesPerSPerSession = res.MBytesPerS / float64(res.Ready)
	case WorkloadPingPong:
		// Every session pings once per interval; the pings are spread over
		// the interval (a slot per millisecond) so that they do not queue
		// behind each other, and stamped on their loop when written.
		const slot = time.Millisecond
		slots := max(1, int(cfg.Interval/slot))
		ticker := time.NewTicker(slot)
		end := time.After(cfg.Duration)
		cl.takeRTTs()
		tick := 0
	loop:
		for {
			select {
			case <-ticker.C:
				mu.Lock()
				for i := tick % slots; i < len(conns); i += slots {
					cc := conns[i]
					cc.conn.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
						cc.send(packetPing(time.Now().UnixNano()))
						return nil
					}))
				}
				mu.Unlock()
				tick++
			case <-end:
				break loop
			}
		}
		ticker.Stop()
		if os.Getenv("XPRAPROXY_TRACE") == "flight" && p.kind == ProxyXpraproxy && p.pid() > 0 {
			// The proxy's flight recorder writes the measured phase.
			syscall.Kill(p.pid(), syscall.SIGUSR1)
		}
		time.Sleep(cfg.Interval)
		rtts := cl.takeRTTs()
		res.Samples = len(rtts)
		res.P50us, res.P99us, res.P999us = percentiles(rtts)
	default:
		return nil, fmt.Errorf("bench: unknown workload %q (idle, stream, pingpong, connect)", cfg.Workload)
	}
	<-upgraded
	res.ClientsClosed = cl.closed.Load() - closed0
	res.MaxDrawGapMS = float64(cl.maxGap.Load()) / 1e6
	elapsed := time.Since(start)
	res.DurationS = elapsed.Seconds()
	res.GeneratorCPUPercent = 100 * float64(rusage()-cpu0) / float64(elapsed)
	after := readTree(p.pid(), true)
	res.ProxyRSS, res.ProxyPSS = after.RSS, after.PSS
	res.ProxyProcesses, res.ProxyCounted = len(after.Procs), after.Counted()
	res.ProxyCPUPercent = 100 * float64(after.CPU-pcpu0) / float64(elapsed)
	if p.pid() > 0 {
		res.ProxyRSSPerSession = float64(res.ProxyRSS-res.ProxyRSSBaseline) / float64(res.Ready)
		if res.ProxyPSS > 0 && res.ProxyPSSBaseline > 0 {
			res.ProxyPSSPerSession = float64(res.ProxyPSS-res.ProxyPSSBaseline) / float64(res.Ready)
		}
	}
	if heap1 := proxyHeap(p); heap1 > 0 {
		res.ProxyHeap = heap1
		res.ProxyHeapPerSession = float64(heap1-heap0) / float64(res.Ready)
	}
	res.BadData += cl.badData.Load()
	res.Failed = cl.failed.Load()
	res.LastError = cl.lastError()
	return res, nil
}

func packetStream(cfg Config) []any {
	return []any{pktStream, cfg.Size, cfg.Window, cfg.Verify}
}

func packetPing(now int64) []any {
	return []any{"ping", now, now / 1e6, "bench"}
}

// runConnect keeps Sessions handshakes in flight for Duration, each closed
// as soon as the server's hello arrives, and counts completed setups.
func runConnect(cfg Config, res *Result, p *proxyProc, cl *clients, source func(int) string) (*Result, error) {
	slots := make(chan struct{}, cfg.Sessions)
	cl.onClose = func(*clientConn) {
		select {
		case slots <- struct{}{}:
		default:
		}
	}
	for range cfg.Sessions {
		slots <- struct{}{}
	}
	cpu0 := rusage()
	_, pcpu0 := procStats(p.pid())
	start := time.Now()
	end := start.Add(cfg.Duration)
	// A small pool of dialers (not one per connection): a dial and its
	// enrolment block, and one dialer would be the bottleneck.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(8, cfg.Sessions) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				select {
				case <-slots:
					i := int(next.Add(1))
					cl.open(i, fmt.Sprintf("u%d", i%cfg.Sessions), source(i), p.addr)
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.DurationS = elapsed.Seconds()
	res.Ready, res.Failed = cl.ready.Load(), cl.failed.Load()
	res.SetupsPerS = float64(res.Ready) / elapsed.Seconds()
	res.GeneratorCPUPercent = 100 * float64(rusage()-cpu0) / float64(elapsed)
	after := readTree(p.pid(), true)
	res.ProxyRSS, res.ProxyPSS = after.RSS, after.PSS
	res.ProxyProcesses, res.ProxyCounted = len(after.Procs), after.Counted()
	res.ProxyCPUPercent = 100 * float64(after.CPU-pcpu0) / float64(elapsed)
	res.LastError = cl.lastError()
	return res, nil
}

func percentiles(d []time.Duration) (p50, p99, p999 float64) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		i := min(len(d)-1, int(q*float64(len(d))))
		return float64(d[i].Nanoseconds()) / 1e3
	}
	return at(0.50), at(0.99), at(0.999)
}
