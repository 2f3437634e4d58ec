package bench

// An upgrade in the middle of a run (docs/upgrade.md, step 2): at
// UpgradeAt into the measured phase the bench asks xpraproxy to upgrade
// (the same binary) over its own socket, as `xpraproxy upgrade` does, and
// records how many sessions went to the new process, how long the request
// took, and, from the clients, whether any connection closed and the
// longest gap between two draws of a streaming session.

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/route"
)

var upgradeReply = regexp.MustCompile(`new process (\d+) serves; (\d+) sessions handed over in ([0-9.]+)ms; process \d+ drains (\d+)`)

// upgradeDuring runs the upgrade at cfg.UpgradeAt and fills res; it
// returns at once (the upgrade runs beside the workload) and the returned
// channel closes when it is done.
func upgradeDuring(cfg Config, res *Result, p *proxyProc) <-chan struct{} {
	done := make(chan struct{})
	if cfg.UpgradeAt <= 0 {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		time.Sleep(cfg.UpgradeAt)
		start := time.Now()
		reply, err := requestUpgrade(p)
		res.UpgradeRequestMS = float64(time.Since(start).Microseconds()) / 1e3
		if err != nil {
			res.UpgradeError = err.Error()
			cfg.Log("upgrade: %v", err)
			return
		}
		m := upgradeReply.FindStringSubmatch(reply)
		if m == nil {
			res.UpgradeError = "unexpected reply: " + reply
			return
		}
		pid, _ := strconv.Atoi(m[1])
		res.UpgradeHanded, _ = strconv.Atoi(m[2])
		res.UpgradeHandoverMS, _ = strconv.ParseFloat(m[3], 64)
		res.UpgradeKept, _ = strconv.Atoi(m[4])
		p.successor.Store(int64(pid))
		cfg.Log("upgrade: %s (request %.0f ms)", reply, res.UpgradeRequestMS)
	}()
	return done
}

// requestUpgrade sends xpraproxy's upgrade request on its own socket and
// returns the reply's text.
func requestUpgrade(p *proxyProc) (string, error) {
	if p.kind != ProxyXpraproxy && p.kind != ProxyXpraproxyRoot {
		return "", fmt.Errorf("bench: an upgrade is for --proxy=%s or %s", ProxyXpraproxy, ProxyXpraproxyRoot)
	}
	path := filepath.Join(p.sockDir, route.SocketHostname()+"-"+strings.TrimPrefix(p.display, ":"))
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	w := frame.Writer{Encoding: frame.Rencode}
	b, _ := w.AppendPacket(nil, frame.Packet{"hello", frame.NewDict("version", "3.1.3", "request", "upgrade", "rencode", true)})
	c.Write(b)
	reply, err := frame.NewStreamReader(c, 0).ReadPacket()
	if err != nil || len(reply) < 2 {
		return "", fmt.Errorf("bench: upgrade: %v", err)
	}
	if reply.Type() == "disconnect" {
		return "", fmt.Errorf("bench: upgrade refused: %v", reply[1:])
	}
	d, _ := reply[1].(frame.Dict)
	text, _ := d.Text("upgraded")
	return text, nil
}
