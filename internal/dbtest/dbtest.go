// Package dbtest starts real database servers for tests: PostgreSQL and
// MariaDB from Debian's packages (README's test command installs them),
// each in a temporary directory on a free loopback port, owned by the test
// and gone when it ends. A server can be stopped and started again, for
// tests of what the proxy does while its database is down.
package dbtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/testenv"
)

// Server is a database server the test owns.
type Server struct {
	t    testing.TB
	dir  string
	Port int
	// URI is the xpra database as its own user (password included).
	URI  string
	args []string
	cred *syscall.Credential
	cmd  *exec.Cmd
	exit chan error
	log  string
	stop syscall.Signal // the server's fast shutdown
	// ready, when set, is a command that succeeds once the server takes
	// queries: PostgreSQL accepts TCP connections while it is still
	// starting up and refuses their logins ("the database system is
	// starting up"), which failed tests on a loaded machine.
	ready []string
}

// account is the system user a server runs as: PostgreSQL and MariaDB
// refuse to run as root.
func account(t testing.TB, name string) *syscall.Credential {
	if os.Getuid() != 0 {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("dbtest: no %s account (is the server's Debian package installed?): %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func tempDir(t testing.TB, cred *syscall.Credential, prefix string) string {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		os.Chown(dir, int(cred.Uid), int(cred.Gid))
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func secret() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// run runs a setup command as the server's account.
func run(t testing.TB, cred *syscall.Credential, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dbtest: %s: %v\n%s", name, err, out)
	}
}

// Start runs the server (again) and waits until it accepts connections.
func (s *Server) Start() {
	s.t.Helper()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("dbtest: %s: %v", s.args[0], err)
	}
	s.cmd, s.exit = cmd, make(chan error, 1)
	go func() { s.exit <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second); err == nil {
			c.Close()
			if s.ready == nil {
				return
			}
			ready := exec.Command(s.ready[0], s.ready[1:]...)
			ready.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
			if ready.Run() == nil {
				return
			}
		}
		select {
		case err := <-s.exit:
			out, _ := os.ReadFile(s.log)
			s.t.Fatalf("dbtest: %s exited: %v\n%s", filepath.Base(s.args[0]), err, out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("dbtest: %s did not listen on %d", filepath.Base(s.args[0]), s.Port)
		}
	}
}

// Stop shuts the server down (fast: connections are dropped) and waits.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	syscall.Kill(s.cmd.Process.Pid, s.stop)
	select {
	case <-s.exit:
	case <-time.After(20 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exit
	}
	s.cmd = nil
}

// Postgres starts a PostgreSQL server with a database "xpra" owned by a
// user "xpra" that logs in with a password over TCP.
func Postgres(t testing.TB) *Server {
	t.Helper()
	const bin = "/usr/lib/postgresql/15/bin/"
	cred := account(t, "postgres")
	dir := tempDir(t, cred, "xpraproxy-pg-")
	data := filepath.Join(dir, "data")
	run(t, cred, bin+"initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")
	port := testenv.FreePort()
	s := &Server{t: t, dir: dir, Port: port, cred: cred, log: filepath.Join(dir, "server.log"), stop: syscall.SIGINT,
		args: []string{bin + "postgres", "-D", data, "-k", dir, "-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB"},
		ready: []string{bin + "pg_isready", "-q", "-h", dir, "-p", strconv.Itoa(port), "-U", "postgres"}}
	s.Start()
	t.Cleanup(s.Stop)
	pw := secret()
	run(t, cred, bin+"psql", "-h", dir, "-p", strconv.Itoa(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q",
		"-c", "CREATE ROLE xpra LOGIN PASSWORD '"+pw+"'", "-c", "CREATE DATABASE xpra OWNER xpra")
	s.URI = fmt.Sprintf("postgresql://xpra:%s@127.0.0.1:%d/xpra", pw, port)
	return s
}

// MariaDB starts a MariaDB server with a database "xpra" and a user
// "xpra" that may use it, over TCP with a password.
func MariaDB(t testing.TB) *Server {
	t.Helper()
	cred := account(t, "mysql")
	dir := tempDir(t, cred, "xpraproxy-mariadb-")
	data := filepath.Join(dir, "data")
	run(t, nil, "mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=mysql",
		"--auth-root-authentication-method=normal", "--skip-test-db")
	port := testenv.FreePort()
	sock := filepath.Join(dir, "mysqld.sock")
	s := &Server{t: t, dir: dir, Port: port, log: filepath.Join(dir, "server.log"), stop: syscall.SIGTERM,
		args: []string{"/usr/sbin/mariadbd", "--no-defaults", "--datadir=" + data, "--socket=" + sock, "--port=" + strconv.Itoa(port),
			"--bind-address=127.0.0.1", "--user=mysql", "--skip-log-bin", "--pid-file=" + filepath.Join(dir, "pid"),
			"--innodb-buffer-pool-size=16M", "--skip-name-resolve"}}
	s.Start()
	t.Cleanup(s.Stop)
	pw := secret()
	run(t, nil, "mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
		"CREATE DATABASE xpra; CREATE USER 'xpra'@'127.0.0.1' IDENTIFIED BY '"+pw+"'; GRANT ALL ON xpra.* TO 'xpra'@'127.0.0.1';")
	s.URI = fmt.Sprintf("mysql://xpra:%s@127.0.0.1:%d/xpra", pw, port)
	return s
}
