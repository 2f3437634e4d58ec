// Package video holds the values that pass between a relayed session and
// a proxy-video encoder (spec §5.9): a window's raw pixels to compress and
// what came of them. It is plain Go with no imports of ours so that relay/
// can hand frames to an encoder pool without importing gpu/, whose back
// ends need cgo (openh264, libjpeg-turbo, NVENC): the session core builds
// with CGO_ENABLED=0 and the encoders plug in from cmd/.
package video

// Frame is one screen update to compress: raw pixels of a window.
//
// Pixels is the relay's own copy of the draw's pixels (never a socket
// buffer); the relay sends it on unchanged when encoding fails, so an
// encoder reads it and never writes it.
type Frame struct {
	Window  uint64 // the window's key, unique across sessions
	Width   int
	Height  int
	Stride  int    // bytes per row
	Format  string // BGRX, BGRA, RGBX or RGBA (xpra's rgb_format)
	Pixels  []byte
	Quality int   // 1-100; 0: the back end's default
	Seq     int64 // the draw's packet sequence, for the caller
}

// Result is a compressed frame, or why it is not (Err: the caller passes
// the frame's pixels through unencoded).
type Result struct {
	Frame    *Frame
	Encoding string         // what Data is: "jpeg", "h264"
	Data     []byte         // compressed picture, the caller's once delivered
	Options  map[string]any // decoder hints for the client's draw packet
	Err      error
	// Replaced are the sequences of older frames of the window that this
	// one replaced before they were encoded: the caller acknowledges them.
	Replaced []int64
	Batch    int // frames the back end compressed in the same call
}
