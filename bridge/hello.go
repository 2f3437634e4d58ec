package bridge

import (
	"strings"

	"github.com/xpraproxy/xpraproxy/frame"
)

// Hello translation, both ways (bridge-notes.md 2-11). 3.1 sends flat
// dotted keys ("encoding.full_csc_modes"), 6.x nests them, with a dict's
// own value under "" ({"lz4": {"": true, ...}}). The network caps (which
// encoders and compressors a side may use) are the proxy's to set: each
// side is offered what the proxy will write to it.

// keepDict are hello keys whose values are dicts in both generations:
// flattening must not take them apart (from captured 3.1.3 and 6.5
// hellos).
var keepDict = setOf("antialias", "connection-data", "cursor", "display-icc", "encoding.full_csc_modes", "icc",
	"window.frame_sizes", "xkbmap_mod_meanings", "xkbmap_query_struct", "xkbmap_x11_keycodes",
	"display.monitors", "monitors", "xkbmap_keycodes")

// Keys (and everything under them) that never cross: the network layer
// the proxy negotiates for each side, packet aliases, encryption, and
// mmap (a client's shared-memory file is on its own host).
var networkKeys = []string{"aliases", "cipher", "encryption", "digest", "salt-digest", "zlib", "lzo", "lz4",
	"brotli", "rencode", "rencodeplus", "bencode", "yaml", "encoders", "compressors", "mmap", "mmap_file",
	"mmap_size", "mmap_token", "mmap_token_index", "mmap_token_bytes", "mmap_namespace", "none"}

// maxNest bounds how deep a dotted key is nested; deeper keys stay flat
// (a stranger's hello could have thousands of dots).
const maxNest = 16

// Compressor is what the proxy writes to a 3.1 peer: lz4 where it has it,
// else zlib (every 3.1 peer has zlib). 6.x peers always get lz4.
type Compressor uint8

const (
	LZ4 Compressor = iota
	Zlib
	// LZ4OrZlib offers both: a 3.1 server's own hello then says which
	// it has.
	LZ4OrZlib
)

// ClientHello translates a client's hello (as the proxy sends it on:
// filtered, session options applied) from a client of generation from
// for a server of generation to.
func ClientHello(caps frame.Dict, from, to Gen, comp Compressor) frame.Dict {
	switch {
	case from == Gen31 && to == Gen6:
		flat := dropKeys(toText(caps, 0).(frame.Dict), networkKeys)
		addMetadataName(flat, "size-hints", "size-constraints")
		return setNetwork(nest(keyboard31to6(flat)), Gen6, LZ4)
	case from == Gen6 && to == Gen31:
		flat := dropKeys(flatten(keyboard6to31(caps)), networkKeys)
		addMetadataName(flat, "size-constraints", "size-hints")
		return setNetwork(flat, Gen31, comp)
	}
	return caps
}

// ServerHello translates a server's hello, with the caps of the 6.x
// encodings packet that follows it (nil: none), for a client of
// generation to.
func ServerHello(caps, encodings frame.Dict, from, to Gen, comp Compressor) frame.Dict {
	switch {
	case from == Gen6 && to == Gen31:
		flat := flatten(caps)
		for _, kv := range flatten(encodings) {
			k, _ := frame.AsText(kv.Key)
			flat.Set(k, kv.Value)
		}
		for _, r := range [][2]string{{"clipboard.direction", "clipboard-direction"},
			{"clipboard.selections", "clipboards"}, {"remote-logging.receive", "remote-logging"}} {
			if v, ok := flat.Get(r[0]); ok && !flat.Has(r[1]) {
				flat.Set(r[1], v)
			}
		}
		mode, _ := flat.Text("server.mode")
		flat.Set("desktop", mode == "desktop" || mode == "monitor")
		flat.Set("shadow", strings.HasPrefix(mode, "shadow"))
		flat.Set("clipboard.contents-slice-fix", true) // 6.x always slices right
		flat.Set("window_unmap", true)
		flat = dropKeys(flat, networkKeys)
		return setNetwork(flat, Gen31, comp)
	case from == Gen31 && to == Gen6:
		flat := dropKeys(toText(caps, 0).(frame.Dict), networkKeys)
		return setNetwork(nest(flat), Gen6, LZ4)
	}
	return caps
}

// setNetwork gives caps the encoder and compressor the proxy writes to a
// peer of g.
func setNetwork(caps frame.Dict, g Gen, comp Compressor) frame.Dict {
	if g == Gen6 {
		caps.Set("rencodeplus", true)
		caps.Set("encoders", []any{"rencodeplus"})
		caps.Set("compressors", []any{"lz4"})
		caps.Set("lz4", true)
		return caps
	}
	caps.Set("rencode", true)
	caps.Set("bencode", false)
	caps.Set("encoders", []any{"rencode"})
	switch comp {
	case LZ4:
		caps.Set("compressors", []any{"lz4"})
		caps.Set("lz4", true)
		caps.Set("zlib", false)
	case LZ4OrZlib:
		caps.Set("compressors", []any{"lz4", "zlib"})
		caps.Set("lz4", true)
		caps.Set("zlib", true)
	default:
		caps.Set("compressors", []any{"zlib"})
		caps.Set("lz4", false)
		caps.Set("zlib", true)
	}
	return caps
}

// dropKeys removes every key equal to one of names or under it
// ("name.anything").
func dropKeys(d frame.Dict, names []string) frame.Dict {
	out := d[:0:0]
	for _, kv := range d {
		k, _ := frame.AsText(kv.Key)
		drop := false
		for _, n := range names {
			if k == n || strings.HasPrefix(k, n) && len(k) > len(n) && k[len(n)] == '.' {
				drop = true
				break
			}
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// addMetadataName adds name to metadata.supported when it lists the
// other generation's have (3.1's "size-hints" is 6.x's
// "size-constraints"; each filters window metadata by its own names).
func addMetadataName(flat frame.Dict, have, name string) {
	v, ok := flat.Get("metadata.supported")
	list, isList := v.([]any)
	if !ok || !isList {
		return
	}
	found := false
	for _, e := range list {
		switch s, _ := frame.AsText(e); s {
		case name:
			return
		case have:
			found = true
		}
	}
	if found {
		flat.Set("metadata.supported", append(append([]any(nil), list...), name))
	}
}

// flatten turns 6.x nested caps into 3.1's dotted keys; {"": v} is the
// parent key's own value. Dicts whose keys are not all text, empty
// dicts and keepDict values stay dicts.
func flatten(d frame.Dict) frame.Dict {
	out := make(frame.Dict, 0, len(d))
	flattenInto(&out, d, "", 0)
	return out
}

func flattenInto(out *frame.Dict, d frame.Dict, prefix string, depth int) {
	for _, kv := range d {
		k, ok := frame.AsText(kv.Key)
		if !ok {
			continue // an int key at the top of a hello: nothing reads it
		}
		key := prefix + k
		if k == "" && prefix != "" {
			key = prefix[:len(prefix)-1]
		}
		if sub, isDict := kv.Value.(frame.Dict); isDict && len(sub) > 0 && textKeys(sub) && !keepDict[key] && depth < maxNest {
			flattenInto(out, sub, key+".", depth+1)
			continue
		}
		out.Set(key, kv.Value)
	}
}

func textKeys(d frame.Dict) bool {
	for _, kv := range d {
		if _, ok := frame.AsText(kv.Key); !ok {
			return false
		}
	}
	return true
}

// nest turns 3.1's dotted keys into 6.x's nested caps. A key that is
// also a prefix of others keeps its value under "".
func nest(flat frame.Dict) frame.Dict {
	out := make(frame.Dict, 0, len(flat))
	for _, kv := range flat {
		k, ok := frame.AsText(kv.Key)
		if !ok {
			continue
		}
		parts := strings.Split(k, ".")
		if len(parts) > maxNest {
			parts = []string{k}
		}
		out = setPath(out, parts, kv.Value)
	}
	return out
}

func setPath(d frame.Dict, parts []string, v any) frame.Dict {
	k := parts[0]
	i := d.Index(k)
	if len(parts) == 1 {
		if i < 0 {
			return append(d, frame.Pair{Key: k, Value: v})
		}
		if sub, isDict := d[i].Value.(frame.Dict); isDict {
			if _, vDict := v.(frame.Dict); !vDict {
				sub.Set("", v)
				d[i].Value = sub
				return d
			}
		}
		d[i].Value = v
		return d
	}
	var sub frame.Dict
	if i >= 0 {
		switch x := d[i].Value.(type) {
		case frame.Dict:
			sub = x
		default:
			sub = frame.Dict{{Key: "", Value: x}}
		}
	}
	sub = setPath(sub, parts[1:], v)
	if i >= 0 {
		d[i].Value = sub
		return d
	}
	return append(d, frame.Pair{Key: k, Value: sub})
}
