// Package xprahello builds the hellos of simulated xpra peers of both
// generations, for the load generator (bench) and the test harness
// (internal/xpratest): one description of what each generation's minimal
// hello looks like.
//
//   - 3.1 (Debian's 3.1.3): rencode, a flat hello (`lz4: true`), frames
//     compressed only when the peer asks for a level above 0;
//   - 6.x: rencodeplus only, a nested hello (`lz4: {"": true}`), lz4
//     frames (zlib is gone).
package xprahello

import "github.com/xpraproxy/xpraproxy/frame"

// Generation names an xpra generation as bench's --peer does.
type Generation string

// The two generations.
const (
	Gen31 Generation = "3.1"
	Gen6  Generation = "6.x"
)

// Of is the generation that writes packets with enc.
func Of(enc frame.Encoding) Generation {
	if enc == frame.RencodePlus {
		return Gen6
	}
	return Gen31
}

// Client is a minimal client hello of generation gen for user, asking
// for compression level 1 as xpra's clients do by default.
func Client(gen Generation, user string) frame.Dict {
	if gen == Gen6 {
		return frame.NewDict(
			"version", "6.5", "username", user,
			"encoders", []any{"rencodeplus"}, "rencodeplus", frame.NewDict("", true),
			"compressors", []any{"lz4", "brotli"}, "lz4", frame.NewDict("", true), "compression_level", 1,
			"digest", []any{"hmac+sha512", "hmac+sha256"}, "salt-digest", []any{"hmac+sha512", "hmac+sha256"},
			"share", false, "windows", true,
			"desktop_size", []any{1024, 768}, "encodings", frame.NewDict("", []any{"rgb24"}))
	}
	return frame.NewDict(
		"version", "3.1.3", "username", user,
		"rencode", true, "bencode", true, "encoders", []any{"rencode", "bencode"},
		"compressors", []any{"lz4"}, "lz4", true, "compression_level", 1,
		"digest", []any{"hmac", "hmac+sha256", "hmac+sha512"}, "salt-digest", []any{"hmac+sha256", "hmac+sha512"},
		"wants_aliases", false, "share", false, "windows", true,
		"desktop_size", []any{1024, 768}, "screen_sizes", []any{}, "encodings", []any{"rgb24"})
}

// Server is a minimal server hello answering a client that writes with
// enc: a server of that client's generation.
func Server(enc frame.Encoding) frame.Dict {
	if Of(enc) == Gen6 {
		return frame.NewDict("version", "6.5", "encoders", []any{"rencodeplus"}, "rencodeplus", frame.NewDict("", true),
			"compressors", []any{"lz4"}, "lz4", frame.NewDict("", true), "desktop_size", []any{1024, 768},
			"max_desktop_size", []any{4096, 4096}, "session-name", "simulated")
	}
	return frame.NewDict(
		"version", "3.1.3", "rencode", true, "bencode", true, "compressors", []any{"lz4"}, "lz4", true,
		"encoders", []any{"rencode", "bencode"}, "desktop_size", []any{1024, 768},
		"max_desktop_size", []any{4096, 4096}, "session-name", "simulated")
}

// Writer frames packets as a peer of generation gen does at compression
// level (0: none).
func Writer(gen Generation, level int) frame.Writer {
	w := frame.Writer{Encoding: frame.Rencode}
	if gen == Gen6 {
		w.Encoding = frame.RencodePlus
	}
	if level > 0 {
		w.Compression = frame.AlgoLZ4.WithLevel(level)
	}
	return w
}
