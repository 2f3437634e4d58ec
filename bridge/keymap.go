package bridge

import (
	"strings"

	"github.com/xpraproxy/xpraproxy/frame"
)

// Keymaps (bridge-notes.md 8): 3.1 sends its keyboard as flat
// xkbmap_<key> properties, in the hello and in keymap-changed; clients
// since 4.4 nest them as {"keymap": {<key>: ...}}. A 6.x server reads
// the layout only from the nested form (x11/server/keyboard_config.py
// parse_layout) and, since it delays keyboard data, sets no keymap until
// the client sends one after the handshake (the 6.x client's
// send_config); 3.1 servers read only the flat form, and without it
// typing fails ("client failed to provide any keycodes!").

const keymapPrefix = "xkbmap_"

// keymapChanged is a keymap-changed packet with its properties
// translated by f (unnestKeymap for a 3.1 server, nestKeymap for 6.x).
func keymapChanged(p frame.Packet, f func(frame.Dict) frame.Dict) frame.Packet {
	if len(p) < 2 {
		return p
	}
	props, ok := p[1].(frame.Dict)
	if !ok {
		return p
	}
	out := append(frame.Packet(nil), p...)
	out[1] = f(props)
	return out
}

// unnestKeymap replaces d's "keymap" dict with xkbmap_<key> entries.
func unnestKeymap(d frame.Dict) frame.Dict {
	i := d.Index("keymap")
	if i < 0 {
		return d
	}
	km, ok := d[i].Value.(frame.Dict)
	if !ok {
		return d
	}
	out := make(frame.Dict, 0, len(d)+len(km))
	out = append(out, d[:i]...)
	out = append(out, d[i+1:]...)
	for _, kv := range km {
		if k, ok := frame.AsText(kv.Key); ok {
			out.Set(keymapPrefix+k, kv.Value)
		}
	}
	return out
}

// nestKeymap moves d's xkbmap_<key> entries into a "keymap" dict, which
// replaces any "keymap" d had (none: d as it is).
func nestKeymap(d frame.Dict) frame.Dict {
	var km, out frame.Dict
	for _, kv := range d {
		k, _ := frame.AsText(kv.Key)
		if name, ok := strings.CutPrefix(k, keymapPrefix); ok && name != "" {
			km = append(km, frame.Pair{Key: name, Value: kv.Value})
			continue
		}
		if k != "keymap" {
			out = append(out, kv)
		}
	}
	if km == nil {
		return d
	}
	return append(out, frame.Pair{Key: "keymap", Value: km})
}

// keyboard31to6 is a 3.1 client's hello with its keymap nested. 3.1 has
// a keyboard unless it says "keyboard": False, and sends keyboard_sync
// beside the keymap; 6.x gives a client keyboard state only when it says
// "keyboard" (or sends flat legacy keycodes, which are now nested), and
// reads sync from the keymap.
func keyboard31to6(caps frame.Dict) frame.Dict {
	out := nestKeymap(caps)
	i := out.Index("keymap")
	if i < 0 {
		return out
	}
	km, isDict := out[i].Value.(frame.Dict)
	if !isDict {
		return out // not a keymap (a 3.1 client sends none of its own)
	}
	if !out.Has("keyboard") {
		out.Set("keyboard", true)
	}
	if v, ok := out.Get("keyboard_sync"); ok {
		km = append(frame.Dict(nil), km...)
		km.Set("sync", v)
		out[i].Value = km
	}
	return out
}

// keyboard6to31 is a 6.x client's hello with its keymap flat, and the
// keymap's sync where 3.1 reads it.
func keyboard6to31(caps frame.Dict) frame.Dict {
	if km, ok := caps.Dict("keymap"); ok {
		if v, ok := km.Get("sync"); ok && !caps.Has("keyboard_sync") {
			caps = append(frame.Dict(nil), caps...)
			caps.Set("keyboard_sync", v)
		}
	}
	return unnestKeymap(caps)
}

// KeymapConfig is the packet a proxy sends a 6.x server for a 3.1 client
// once the server's hello has come: the client's keymap from its hello
// (clientHello as the client sent it), nested and forced, as a 6.x
// client sends it after the handshake. It reports false when the hello
// has no keymap (a client without a keyboard).
func KeymapConfig(clientHello frame.Dict) (frame.Packet, bool) {
	if v, ok := clientHello.Get("keyboard"); ok && !frame.Truth(v) {
		return nil, false
	}
	km, ok := keyboard31to6(toText(clientHello, 0).(frame.Dict)).Dict("keymap")
	if !ok {
		return nil, false
	}
	return frame.Packet{"keymap-changed", frame.Dict{{Key: "keymap", Value: km}}, true}, true
}
