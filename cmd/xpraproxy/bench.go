package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/xpraproxy/xpraproxy/bench"
)

// benchMain is `xpraproxy bench`: the load generator (see bench/).
func benchMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg bench.Config
	fs.StringVar(&cfg.Proxy, "proxy", "xpraproxy", "proxy under test: xpraproxy, xpraproxy-root, xpra, haproxy, direct")
	fs.StringVar(&cfg.Transport, "transport", "tcp", "how clients reach xpraproxy: tcp, ws, ssl, wss, ssh, aes (xpra AES-CBC), aes-ctr (6.x peers) on one port; quic (UDP, the same port number)")
	fs.StringVar(&cfg.ServerPeer, "server-peer", "", "the simulated server's own generation when it is not --peer's: it refuses the client's and xpraproxy bridges the two (issue 17)")
	fs.StringVar(&cfg.Peer, "peer", "3.1", "the simulated peers' xpra generation: 3.1 (rencode, flat hellos), 6.x (rencodeplus, nested hellos, lz4 frames) or 3.1-html5 (bencode only, as the 3.1 HTML5 client)")
	fs.StringVar(&cfg.Users, "users", "", "xpraproxy's user database: a postgresql:// or mysql:// URI (the sql module) instead of a sqlite file")
	fs.BoolVar(&cfg.RealHello, "real-hello", false, "clients send a real client's captured hello (3.1.3: 67 KB, 6.5.5: 4.4 KB, encoded)")
	fs.StringVar(&cfg.Workload, "workload", "idle", "idle, stream, pingpong, connect, soak")
	fs.IntVar(&cfg.Sessions, "sessions", 100, "simulated sessions (handshakes in flight for connect)")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of the measured phase")
	fs.IntVar(&cfg.Size, "size", 64<<10, "draw payload bytes (stream)")
	fs.IntVar(&cfg.Window, "window", 4, "draws in flight per session (stream)")
	fs.DurationVar(&cfg.Interval, "interval", 100*time.Millisecond, "time between pings of a session (pingpong)")
	fs.BoolVar(&cfg.Verify, "verify", false, "crc-check every draw (stream)")
	fs.IntVar(&cfg.Slow, "slow", 10, "slow readers flooded by their server (soak)")
	fs.DurationVar(&cfg.UpgradeAt, "upgrade-at", 0, "upgrade xpraproxy (the same binary) this far into the measured phase: sessions handed over, closed clients, the longest gap between draws")
	proxyArgs := fs.String("proxy-args", "", "extra options for xpraproxy, space-separated (e.g. \"--max-session-buffer=4M\")")
	fs.IntVar(&cfg.Loops, "loops", 1, "event loops for the generator and for the simulated server")
	fs.IntVar(&cfg.Sources, "sources", 0, "loopback source addresses, 127.0.0.2 and up (default: enough for the sessions)")
	binary := fs.String("binary", "", "the xpraproxy binary under test (default: this one)")
	jsonOut := fs.Bool("json", false, "print one JSON object on the last line")
	verbose := fs.Bool("v", false, "progress on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "xpraproxy bench:", err)
		return 1
	}
	cfg.Binary = self
	if *binary != "" {
		cfg.Binary = *binary
	}
	cfg.ProxyArgs = strings.Fields(*proxyArgs)
	if *verbose {
		cfg.Log = func(f string, a ...any) { fmt.Fprintf(stderr, "bench: "+f+"\n", a...) }
	}
	res, err := bench.Run(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "xpraproxy bench:", err)
		if res == nil {
			return 1
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "proxy\tworkload\tsessions\tready\tfailed\tproxy RSS/session\tproxy PSS/session\tproxy heap/session\tproxy CPU\tgenerator CPU\tMB/s\tMB/s/session\tp50 µs\tp99 µs\tp999 µs\tsetups/s\n")
	fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.0f B\t%.0f B\t%.0f B\t%.0f%%\t%.0f%%\t%.1f\t%.2f\t%.0f\t%.0f\t%.0f\t%.1f\n",
		res.Proxy, res.Workload, res.Sessions, res.Ready, res.Failed, res.ProxyRSSPerSession, res.ProxyPSSPerSession, res.ProxyHeapPerSession,
		res.ProxyCPUPercent, res.GeneratorCPUPercent, res.MBytesPerS, res.MBytesPerSPerSession,
		res.P50us, res.P99us, res.P999us, res.SetupsPerS)
	tw.Flush()
	if res.ProxyCounted != "" {
		// RSS, PSS and CPU sum the proxy's whole process tree.
		fmt.Fprintf(stdout, "proxy processes counted: %s (before the sessions: %d)\n", res.ProxyCounted, res.ProxyProcessesBaseline)
	}
	if res.Workload == bench.WorkloadSoak {
		fmt.Fprintf(stdout, "soak: proxy RSS max %d B (baseline %d B); slow readers: %d disconnected with a reason, %d cut, %d read everything\n",
			res.ProxyRSSMax, res.ProxyRSSBaseline, res.SlowDisconnected, res.SlowCut, res.SlowDrained)
	}
	if cfg.UpgradeAt > 0 {
		fmt.Fprintf(stdout, "upgrade: %d sessions handed over in %.1f ms (request %.1f ms), %d kept by the old process; %d client connections closed; longest gap between draws %.1f ms%s\n",
			res.UpgradeHanded, res.UpgradeHandoverMS, res.UpgradeRequestMS, res.UpgradeKept, res.ClientsClosed, res.MaxDrawGapMS, errNote(res.UpgradeError))
	}
	if res.BadData > 0 {
		fmt.Fprintf(stdout, "WARNING: %d draws arrived corrupted, out of order or from another session\n", res.BadData)
	}
	if res.LastError != "" {
		fmt.Fprintf(stdout, "last client error: %s\n", res.LastError)
	}
	if *jsonOut {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(b))
	}
	if err != nil || res.BadData > 0 {
		return 1
	}
	return 0
}

// errNote is ", error: ERR" for a non-empty ERR.
func errNote(err string) string {
	if err == "" {
		return ""
	}
	return ", error: " + err
}
