// Package frame reads and writes xpra packets exactly as xpra does.
//
// An xpra connection is a stream of frames. Each frame is an 8-byte
// [Header] followed by its payload. A packet is one main frame (chunk index
// 0) holding an encoded list ["type", arg1, arg2, ...], preceded by up to
// three raw frames (index 1..3) whose payloads replace the list element at
// their index ("chunks": pixels, file data, cursors).
//
// The package has four layers, each usable on its own:
//
//   - [Header]: parse and build the 8-byte header; no allocation.
//   - compression: xpra's lz4 (size-prefixed raw block), zlib, brotli and
//     zstd, always bounded by a maximum output size checked before
//     allocating ([Decompress], [Compress]).
//   - encodings: python-rencode as used by xpra 3.1 ([Rencode]), xpra's
//     rencodeplus ([RencodePlus], xpra ≥ 4.3) and xpra's bencode
//     ([Bencode]), sharing one value model (see [Dict]).
//   - packets: [Reader] reassembles packets from input that arrives in
//     pieces, [Writer] turns a packet into frames, and [PeekType] learns a
//     packet's type without decoding the rest, so a relay can pass most
//     packets through untouched.
//
// # Value model
//
// Decoders produce and encoders accept these Go types:
//
//	Python        Go
//	list, tuple   []any
//	dict          Dict (ordered key/value pairs; keys string, []byte or int64)
//	str           string
//	bytes         []byte
//	int           int64, or *big.Int beyond int64
//	float         float64 (float32 when rencode carried a 32-bit float)
//	bool          bool
//	None          nil
//
// rencode and bencode do not tell str from bytes on the wire; like xpra 3.1's
// own decoders they decode every string to []byte (bencode's "u" form gives
// string). rencodeplus keeps the two apart. Use [AsText] where either is
// acceptable.
package frame
