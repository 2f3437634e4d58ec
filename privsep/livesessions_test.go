package privsep

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
)

// sockPair is a connected pair of stream sockets: ours, and the one to
// hand over.
func sockPair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "peer"), os.NewFile(uintptr(fds[1]), "handed")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Live sessions cross the conduit with their state, carried bytes,
// WebSocket frame state and both sockets; a refusal comes back with its
// reason; sessions-done ends the successor's side.
func TestLiveSessionsConduit(t *testing.T) {
	ch, child, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	sch, err := fileChannel(child)
	if err != nil {
		t.Fatal(err)
	}
	u, succ := &Upgrade{ch: ch}, &Successor{ch: sch}
	type took struct {
		h   *loop.HandedSession
		err error
	}
	got := make(chan took, 4)
	done := make(chan [2]int, 1)
	go func() {
		a, r := succ.TakeSessions(func(_ *authn.Account, h *loop.HandedSession) error {
			defer h.Close()
			if h.State.User == "refuse-me" {
				return errors.New("not today")
			}
			// The handed sockets are the same connections.
			h.Client.Write([]byte("to client"))
			h.Server.Write([]byte("to server"))
			got <- took{h: h}
			return nil
		})
		done <- [2]int{a, r}
	}()

	clientPeer, clientEnd := sockPair(t)
	serverPeer, serverEnd := sockPair(t)
	st := &relay.SessionState{Version: relay.StateVersion, ID: 3, User: "foo", Encoding: frame.Rencode, Level: -1,
		Link: relay.Link{Transport: "ws"}, S2C: relay.PipeState{Remaining: 10, CurIndex: 1, Bytes: 99}}
	h := &loop.HandedSession{State: st, ClientBytes: []byte("half a frame"), ServerBytes: []byte{1, 2, 3},
		WS:     &loop.WSState{Payload: []byte("decoded"), Remaining: 5, Mask: [4]byte{1, 2, 3, 4}, Masked: true, MaskPos: 2},
		Client: clientEnd, Server: serverEnd}
	if err := u.HandSession(h); err != nil {
		t.Fatalf("hand session: %v", err)
	}
	var tk took
	select {
	case tk = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the successor took nothing")
	}
	if g := tk.h; g.State.User != "foo" || g.State.S2C.Remaining != 10 || string(g.ClientBytes) != "half a frame" ||
		string(g.ServerBytes) != "\x01\x02\x03" || g.WS == nil || string(g.WS.Payload) != "decoded" || g.WS.Mask != [4]byte{1, 2, 3, 4} || g.WS.MaskPos != 2 {
		t.Errorf("taken: %+v state %+v ws %+v", g, g.State, g.WS)
	}
	for peer, want := range map[*os.File]string{clientPeer: "to client", serverPeer: "to server"} {
		buf := make([]byte, 32)
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := peer.Read(buf); err != nil || string(buf[:n]) != want {
			t.Errorf("through the handed socket: %q %v, want %q", buf[:n], err, want)
		}
	}

	_, c2 := sockPair(t)
	_, s2 := sockPair(t)
	refused := &loop.HandedSession{State: &relay.SessionState{Version: relay.StateVersion, User: "refuse-me", Level: -1}, Client: c2, Server: s2}
	if err := u.HandSession(refused); err == nil || !strings.Contains(err.Error(), "not today") {
		t.Errorf("a refused session: %v", err)
	}
	// A state the successor cannot read is refused too.
	_, c3 := sockPair(t)
	_, s3 := sockPair(t)
	bad := &loop.HandedSession{State: &relay.SessionState{Version: relay.StateVersion, User: "x", Level: 99}, Client: c3, Server: s3}
	if err := u.HandSession(bad); err == nil {
		t.Error("a state out of bounds was adopted")
	}
	u.Close()
	select {
	case n := <-done:
		if n != [2]int{1, 2} {
			t.Errorf("adopted, refused = %v, want [1 2]", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the successor did not stop at sessions-done")
	}
}
