// Package testenv is what tests need of their machine: free ports and root.
// It imports nothing of the proxy, so every package's tests can use it.
package testenv

import (
	"net"
	"os"
	"testing"
)

// FreePort is a loopback TCP port nobody listens on (at the time of the
// call).
func FreePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("testenv: no free port: " + err.Error())
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// NeedRoot fails a test that needs root (other users' passwords, worker
// processes, dropping privileges) when it runs as anyone else: CI runs
// the tests as root, and a test that skips does not count as passing.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (README's test command runs the tests as root)")
	}
}
