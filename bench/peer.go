package bench

import (
	"embed"
	"fmt"
	"strings"
	"sync"

	"github.com/xpraproxy/xpraproxy/frame"
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
		if h, err := realHello(peer); err == nil {
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
		return frame.NewDict(
			"version", "6.5", "username", user, "uuid", "bench-"+user,
			"encoders", []any{"rencodeplus"}, "rencodeplus", frame.NewDict("", true),
			"compressors", []any{"lz4", "brotli"}, "lz4", frame.NewDict("", true),
			"digest", []any{"hmac+sha512", "hmac+sha256"}, "salt-digest", []any{"hmac+sha512", "hmac+sha256"},
			"share", false, "windows", true, "client_type", "bench",
			"desktop_size", []any{1024, 768}, "encodings", frame.NewDict("", []any{"rgb24"}))
	}
	return helloCaps(user)
}

// peerWriter is how a simulated peer of generation peer frames packets.
func peerWriter(peer string) frame.Writer {
	if peer == Peer6 {
		return frame.Writer{Encoding: frame.RencodePlus, Compression: frame.AlgoLZ4.WithLevel(1)}
	}
	return frame.Writer{Encoding: frame.Rencode}
}

// serverHello is the simulated server's hello to a client that writes
// with enc.
func serverHello(enc frame.Encoding) frame.Dict {
	if enc == frame.RencodePlus {
		return frame.NewDict("version", "6.5", "encoders", []any{"rencodeplus"}, "rencodeplus", frame.NewDict("", true),
			"compressors", []any{"lz4"}, "lz4", frame.NewDict("", true), "desktop_size", []any{1024, 768},
			"max_desktop_size", []any{4096, 4096}, "session-name", "bench")
	}
	return frame.NewDict(
		"version", "3.1.3", "rencode", true, "bencode", true, "compressors", []any{"lz4"}, "lz4", true,
		"encoders", []any{"rencode", "bencode"}, "desktop_size", []any{1024, 768},
		"max_desktop_size", []any{4096, 4096}, "session-name", "bench")
}
