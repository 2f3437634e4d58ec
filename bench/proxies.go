package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/authn/sqliteauth"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/route"
)

// Proxy kinds under test.
const (
	ProxyXpraproxy = "xpraproxy"
	// ProxyXpraproxyRoot runs xpraproxy as root: every connection is
	// relayed by a privilege-separated worker (one per account; the bench
	// users all map to nobody, so one worker).
	ProxyXpraproxyRoot = "xpraproxy-root"
	ProxyXpra          = "xpra"
	ProxyHAProxy       = "haproxy"
	ProxyDirect        = "direct"
)

// proxyProc is a running proxy under test.
type proxyProc struct {
	kind    string
	addr    string // where clients connect
	cmd     *exec.Cmd
	sockDir string
	display string
	log     string
	// successor is the process an upgrade started (upgrade.go), which
	// the figures read from then on; stop ends it with the group.
	successor atomic.Int64
}

func (p *proxyProc) pid() int {
	if pid := p.successor.Load(); pid > 0 {
		return int(pid)
	}
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proxyProc) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	// xpra's proxy forks an instance per connection: end the whole group.
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if pid := int(p.successor.Load()); pid > 0 {
		// In the old process's group, which may have exited first.
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// unprivileged makes cmd run as nobody when we are root: neither
// xpraproxy nor xpra's proxy relays as root.
func unprivileged(cmd *exec.Cmd, home string) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid := uid
	if g, err := user.LookupGroup("nogroup"); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if cmd.Env == nil {
		cmd.Env = os.Environ() // GOGC and friends reach the proxy
	}
	cmd.Env = append(cmd.Env, "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_RUNTIME_DIR="+home)
}

// benchUsers are users u0..uN-1 with the bench password, all reaching the
// simulated server.
func benchUsers(n int, target, password string) []authn.User {
	users := make([]authn.User, n)
	for i := range users {
		users[i] = authn.User{Username: fmt.Sprintf("u%d", i), Password: password, Displays: "tcp://" + target + "/"}
	}
	return users
}

// writeUsers makes the sqlite database both proxies read.
func writeUsers(path string, n int, target, password string) error {
	db, err := sqliteauth.Create(path)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.AddAll(benchUsers(n, target, password)); err != nil {
		return err
	}
	return os.Chmod(path, 0o644)
}

// writeSQLUsers puts the same users in a PostgreSQL or MySQL database
// (xpra's table, made if missing; earlier bench users replaced).
func writeSQLUsers(uri string, n int, target, password string) error {
	db, err := authn.OpenSQL(uri, 2, 30*time.Second)
	if err != nil {
		return err
	}
	defer db.Close()
	db.Create() // "exists" is fine
	users := benchUsers(n, target, password)
	for _, u := range users {
		if _, err := db.Remove(u.Username, nil); err != nil {
			return err
		}
	}
	return db.AddAll(users)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startProxy starts the proxy under test; auth, when set, is xpraproxy's
// --tcp-auth instead of the sqlite file; tlsPEM, when set, makes HAProxy
// terminate TLS with that certificate and key.
func startProxy(kind, dir, simAddr, binary string, sessions int, auth, tlsPEM string, extra []string) (*proxyProc, error) {
	if kind == ProxyDirect {
		return &proxyProc{kind: kind, addr: simAddr}, nil
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &proxyProc{kind: kind, addr: fmt.Sprintf("127.0.0.1:%d", port), sockDir: filepath.Join(dir, "sockets"),
		display: fmt.Sprintf(":%d", 20000+port%10000), log: filepath.Join(dir, kind+".log")}
	os.MkdirAll(p.sockDir, 0o777)
	os.Chmod(p.sockDir, 0o777)
	db := filepath.Join(dir, "users.sdb")
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	os.Chmod(p.log, 0o666)
	switch kind {
	case ProxyXpraproxyRoot:
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("bench: %s needs root", kind)
		}
		fallthrough
	case ProxyXpraproxy:
		// The load generator plays thousands of users from a few loopback
		// addresses: the per-address login cap is for strangers, not for
		// it (its handshakes all succeed, so throttling never applies).
		bind := "--bind-tcp=" + p.addr + ",auth=sqlite:filename=" + db
		if auth != "" {
			bind = "--bind-tcp=" + p.addr
			extra = append([]string{"--tcp-auth=" + auth}, extra...)
		}
		for i, a := range extra {
			if a == quicBind {
				// The QUIC listener on the same port number, the same users.
				extra[i] = strings.Replace(bind, "--bind-tcp=", "--bind-quic=", 1)
			}
		}
		p.cmd = exec.Command(binary, append([]string{"proxy", p.display, bind,
			"--socket-dir=" + p.sockDir, "--daemon=no", "--max-logins-per-source=0"}, extra...)...)
	case ProxyXpra:
		p.cmd = exec.Command("xpra", "proxy", p.display, "--bind-tcp="+p.addr, "--tcp-auth=sqlite,filename="+db,
			"--socket-dir="+p.sockDir, "--socket-dirs="+p.sockDir, "--daemon=no", "--mdns=no", "--pulseaudio=no",
			"--notifications=no", "--dbus-proxy=no", "--printing=no", "--webcam=no", "--speaker=no", "--microphone=no")
		p.cmd.Env = append(p.cmd.Env, "XPRA_NOTTY=1", "PATH=/usr/bin:/bin", "XPRA_PROXY_MAX_CONCURRENT_CONNECTIONS=2000")
	case ProxyHAProxy:
		cfg := filepath.Join(dir, "haproxy.cfg")
		conf := fmt.Sprintf(`global
    maxconn %d
defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h
frontend bench
    bind %s%s
    maxconn %d
    default_backend sim
backend sim
    server sim %s maxconn %d
`, min(sessions+100, 9000), p.addr, sslBind(tlsPEM), min(sessions+100, 9000), simAddr, min(sessions+100, 9000))
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		p.cmd = exec.Command("haproxy", "-f", cfg, "-db")
	default:
		return nil, fmt.Errorf("bench: unknown proxy %q (xpraproxy, xpraproxy-root, xpra, haproxy, direct)", kind)
	}
	if kind == ProxyXpraproxyRoot {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	} else {
		unprivileged(p.cmd, dir)
	}
	if kind == ProxyHAProxy && p.cmd.SysProcAttr != nil {
		p.cmd.SysProcAttr.Credential = nil // haproxy needs its fd limit; it has no relay-as-root concern here
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", kind, err)
	}
	for i := 0; i < 300; i++ {
		if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
			c.Close()
			return p, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.stop()
	log, _ := os.ReadFile(p.log)
	return nil, fmt.Errorf("bench: %s did not start listening on %s:\n%s", kind, p.addr, tailText(log, 2000))
}

// sslBind is HAProxy's TLS termination on its bind line ("" for none).
func sslBind(pem string) string {
	if pem == "" {
		return ""
	}
	return " ssl crt " + pem
}

func tailText(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// proxyHeap asks xpraproxy, over its own unix socket, for its Go heap.
func proxyHeap(p *proxyProc) int64 {
	if p.kind != ProxyXpraproxy && p.kind != ProxyXpraproxyRoot {
		return 0
	}
	host := route.SocketHostname()
	path := filepath.Join(p.sockDir, host+"-"+strings.TrimPrefix(p.display, ":"))
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	w := frame.Writer{Encoding: frame.Rencode}
	b, _ := w.AppendPacket(nil, frame.Packet{"hello", frame.NewDict("version", "3.1.3", "request", "info", "info_request", true, "rencode", true)})
	c.Write(b)
	p2, err := frame.NewStreamReader(c, 0).ReadPacket()
	if err != nil || len(p2) < 2 {
		return 0
	}
	info, _ := p2[1].(frame.Dict)
	srv, _ := info.Dict("server")
	heap, _ := srv.Int("heap-inuse")
	return heap
}
