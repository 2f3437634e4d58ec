package bridge

// The packets' shapes, as data. A 3.1 peer's rencode gives every string as
// bytes; a 6.x peer rejects a byte-string packet type and byte-string
// text ("unknown modifier \"b'shift'\""), and needs bytes where data is
// binary. So from 3.1 to 6.x everything that reads as text becomes text,
// except the arguments listed here, which stay bytes. Indexes count the
// packet type as 0 (xpra's own packet layouts, both generations).

// binaryArgs are the arguments of each packet type that carry data.
var binaryArgs = map[string][]int{
	"draw":               {7},    // wid, x, y, w, h, coding, data, ...
	"window-icon":        {5},    // wid, w, h, encoding, data
	"clipboard-contents": {6},    // request id, selection, dtype, dformat, encoding, data
	"clipboard-token":    {7},    // selection, targets, target, dtype, dformat, encoding, data, ...
	"send-file":          {6},    // filename, mimetype, print, open, size, data, ...
	"send-file-chunk":    {3},    // chunk id, chunk number, data, more
	"sound-data":         {2},    // codec, data, metadata
	"webcam-frame":       {6},    // device, frame number, encoding, w, h, data
	"challenge":          {1},    // salt
	"cursor":             nil,    // see largeBinary
	"screenshot":         {3},    // w, h, encoding, data? (server → client)
	"raw":                {1, 2}, // unused by xpra; kept binary if ever seen
}

// largeBinary are packet types whose byte strings longer than
// largeBinaryMin are data wherever they are (cursor layouts differ between
// 3.1 and 6.x and between cursor encodings; a cursor name is short).
var largeBinary = map[string]bool{"cursor": true}

const largeBinaryMin = 64

// knownTypes are the packet types the two generations share; one not
// listed is still translated (best effort) and reported once.
var knownTypes = setOf(
	// both directions
	"hello", "ping", "ping_echo", "disconnect", "set_deflate", "connection-data", "bandwidth-limit",
	"clipboard-token", "clipboard-request", "clipboard-contents", "clipboard-contents-none",
	"clipboard-pending-requests", "clipboard-enable-selections", "set-clipboard-enabled",
	"send-file", "send-file-chunk", "ack-file-chunk", "sound-data", "sound-control",
	"info-request", "info-response", "logging", "notification-close", "notification-action",
	"desktop_size", "pointer-position", "challenge", "control", "server-event",
	// client → server
	"damage-sequence", "button-action", "key-action", "keymap-changed", "layout-changed", "focus",
	"map-window", "unmap-window", "configure-window", "close-window", "move-window", "resize-window",
	"set-cursors", "set-bell", "set-notify", "suspend", "resume", "quality", "min-quality", "speed",
	"min-speed", "encoding", "buffer-refresh", "command_request", "screenshot", "start-command",
	"exit-server", "shutdown-server", "sharing-toggle", "lock-toggle", "wheel-motion", "input-devices",
	"printers", "webcam-start", "webcam-stop", "webcam-frame", "set-keyboard-sync-enabled",
	"window-action", "shell-exec", "set-window-filter", "key-repeat",
	// server → client
	"draw", "eos", "new-window", "new-override-redirect", "new-tray", "lost-window", "window-metadata",
	"window-icon", "window-resized", "window-move-resize", "raise-window", "restack-window",
	"initiate-moveresize", "configure-override-redirect", "cursor", "bell", "notify_show",
	"notify_close", "startup-complete", "setting-change", "show-desktop", "open-url", "encodings",
	"webcam-ack", "sound-control-ack", "new-stream", "stop-stream",
)

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// Known reports whether the tables describe packets of type name.
func Known(name string) bool { return knownTypes[name] }
