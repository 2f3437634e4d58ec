// Package testenv is what tests need of their machine: free ports and root.
// It imports nothing of the proxy, so every package's tests can use it.
package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FreePort is a loopback TCP port nobody listens on (at the time of the
// call). It is drawn below Linux's ephemeral range (32768 and up), where
// the kernel picks the source ports of outgoing connections and ":0"
// listeners: a port handed to a server that starts seconds later (a real
// xpra server) is then not taken meanwhile by a connection of the tests
// running in parallel in other packages.
func FreePort() int {
	for range 200 {
		port := 10000 + rand.IntN(22000)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return port
		}
	}
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
