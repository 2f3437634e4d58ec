package bench

import (
	"embed"
	"fmt"
	"strings"
	"sync"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xprahello"
)

// The simulated peers speak either xpra generation's dialect (Config.Peer):
//   - "3.1": rencode, a flat hello, frames uncompressed (compression_level 0),
//     as Debian's 3.1.3 sends them;
//   - "6.x": rencodeplus, a nested hello, lz4-compressed frames, as 6.x
//     sends them (its only encoder; zlib is gone).
// With Config.RealHello the client's hello is the one a real client sent
// (hellos/, taken from frame/testdata/capture and capture6 by
// frame/testdata/capture.sh): 67 KB encoded (uncompressed) for 3.1.3, 4.4 KB for 6.5.5.

// Peer generations.
const (
	Peer31 = "3.1"
	Peer6  = "6.x"
	// PeerHTML5 is a 3.1 client that speaks bencode only, as Debian's
	// 3.1 HTML5 client does (its hello otherwise the 3.1 one).
	PeerHTML5 = "3.1-html5"
)

//go:embed hellos/*.bin
var helloFiles embed.FS

var (
	realHellosOnce sync.Once
	realHellos     map[string]frame.Dict
	realHellosErr  error
)

// realHello is the captured hello of a real client of generation peer,
// without its login answers.
func realHello(peer string) (frame.Dict, error) {
	realHellosOnce.Do(func() {
		realHellos = map[string]frame.Dict{}
		for _, p := range []string{Peer31, Peer6} {
			b, err := helloFiles.ReadFile("hellos/hello-" + p + ".bin")
			if err != nil {
				realHellosErr = err
				return
			}
			r := frame.Reader{MaxPacketSize: 16 << 20}
			pkt, _, err := r.Next(b)
			if err != nil || pkt.Type() != "hello" {
				realHellosErr = fmt.Errorf("bench: captured %s hello: %v", p, err)
				return
			}
			caps, _ := pkt[1].(frame.Dict)
			caps.DeleteFunc(func(k string) bool { return strings.HasPrefix(k, "challenge") })
			realHellos[p] = caps
		}
	})
	if realHellosErr != nil {
		return nil, realHellosErr
	}
	return realHellos[peer], nil
}

// clientHello is the hello a simulated client of generation peer sends.
func clientHello(peer string, real bool, user string) frame.Dict {
	if real {
		if h, err := realHello(peer); err == nil && h != nil {
			h = append(frame.Dict(nil), h...)
			h.Set("username", user)
			h.Set("uuid", "bench-"+user)
			h.Set("share", false)
			h.Set("wants_aliases", false)
			h.Set("compression_level", 0)
			return h
		}
	}
	if peer == Peer6 {
		h := xprahello.Client(xprahello.Gen6, user)
		h.Set("uuid", "bench-"+user)
		h.Set("client_type", "bench")
		return h
	}
	h := helloCaps(user)
	if peer == PeerHTML5 {
		h.Set("rencode", false)
		h.Set("bencode", true)
		h.Set("encoders", []any{"bencode"})
	}
	return h
}

// peerWriter is how a simulated peer of generation peer frames packets:
// 3.1.3's clients ask for no compression here, 6.x always compresses.
func peerWriter(peer string) frame.Writer {
	switch peer {
	case Peer6:
		return xprahello.Writer(xprahello.Gen6, 1)
	case PeerHTML5:
		w := xprahello.Writer(xprahello.Gen31, 0)
		w.Encoding = frame.Bencode
		return w
	}
	return xprahello.Writer(xprahello.Gen31, 0)
}

// serverHello is the simulated server's hello to a client that writes
// with enc.
func serverHello(enc frame.Encoding) frame.Dict {
	h := xprahello.Server(enc)
	h.Set("session-name", "bench")
	return h
}
