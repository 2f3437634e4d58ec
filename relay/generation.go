package relay

import (
	"strconv"
	"strings"
	"sync"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
	"github.com/xpraproxy/xpraproxy/route"
)

// Which xpra generations can talk (xpra-spec §2.5, §8): what decides it
// is the packet encoders. xpra 3.1 speaks rencode and bencode (and sends
// its first packet zlib-compressed), xpra 6.x only rencodeplus (with lz4
// or brotli; zlib is gone), 4.3–5.x both. Pass-through relaying needs one
// encoder both ends speak.

// Encoders is the set of packet encoders a peer speaks.
type Encoders uint8

const (
	EncRencodePlus Encoders = 1 << iota
	EncRencode
	EncBencode
)

var encoderNames = []struct {
	bit  Encoders
	name string
}{{EncRencodePlus, "rencodeplus"}, {EncRencode, "rencode"}, {EncBencode, "bencode"}}

// PeerEncoders reads the encoders a hello offers: the `encoders` list
// where there is one (3.1 and 6.x both send it), else the per-encoder
// booleans (3.1: `rencode: True`, bencode assumed when absent; 6.x:
// `rencodeplus: {"": True}`). 0 means the hello says nothing usable.
func PeerEncoders(caps frame.Dict) Encoders {
	var e Encoders
	if list := caps.Texts("encoders"); len(list) > 0 {
		for _, name := range list {
			for _, n := range encoderNames {
				if n.name == name {
					e |= n.bit
				}
			}
		}
		return e
	}
	for _, n := range encoderNames {
		if capTrue(caps, n.name) {
			e |= n.bit
		}
	}
	if _, ok := caps.Get("bencode"); !ok && e&EncRencodePlus == 0 {
		e |= EncBencode // 3.1's default
	}
	return e
}

// capTrue reads a boolean that 3.1 sends flat (`lz4: True`) and 6.x as a
// dict with its value under "" (`lz4: {"": True}`).
func capTrue(caps frame.Dict, key string) bool {
	if d, ok := caps.Dict(key); ok {
		b, _ := d.Bool("")
		return b
	}
	b, _ := caps.Bool(key)
	return b
}

func (e Encoders) String() string {
	var names []string
	for _, n := range encoderNames {
		if e&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ", ")
}

// Compatible reports whether a client and a server with these encoders
// can talk through a pass-through relay. Unknown sets (0) are assumed to.
func (e Encoders) Compatible(o Encoders) bool { return e == 0 || o == 0 || e&o != 0 }

// Generation names the xpra releases that speak exactly this set.
func (e Encoders) Generation() string {
	switch {
	case e == EncRencodePlus:
		return "xpra >= 6"
	case e&EncRencodePlus == 0 && e != 0:
		return "xpra < 4.3"
	case e != 0:
		return "xpra 4.3-5.x"
	}
	return "an unknown xpra"
}

// Mismatch is the reason a client with encoders client cannot use a
// server with encoders server: what is wrong and what to do about it. It
// is ASCII: a 3.1 client shows a disconnect reason's bytes as latin-1.
func Mismatch(client, server Encoders) string {
	if server&EncRencodePlus != 0 {
		return "this server (" + server.Generation() + ") needs an xpra >= 4.3 client: rencodeplus; yours offers " +
			client.String() + ": use a newer xpra client, or a server of your client's generation"
	}
	return "this server (" + server.Generation() + ") needs a client that speaks " + strings.ReplaceAll(server.String(), ", ", " or ") +
		"; yours (" + client.Generation() + ") offers only " + client.String() +
		": use an xpra 3.x-5.x client, or a server of xpra >= 4.3"
}

// RefusalEncoders infers a server's encoders from the text it refused a
// hello with. xpra 6.x refuses rencode, bencode and zlib ("'rencode'
// decoder is not available", "zlib is not available"); 3.1 cannot parse
// rencodeplus and says so in terms of its own decoders. 0: not a
// generation mismatch.
func RefusalEncoders(text string, sent Encoders) Encoders {
	t := strings.ToLower(text)
	switch {
	case strings.Contains(t, "zlib is not available"),
		strings.Contains(t, "'rencode' decoder is not available"),
		strings.Contains(t, "'bencode' decoder is not available"):
		return EncRencodePlus
	case sent&EncRencodePlus != 0 && (strings.Contains(t, "bencode") || strings.Contains(t, "rencode packet") ||
		strings.Contains(t, "invalid packet format") || strings.Contains(t, "rencodeplus")):
		return EncRencode | EncBencode
	}
	return 0
}

// Generations remembers the encoders of the servers the proxy has
// reached (from their hellos and refusals), so that a client that cannot
// use one is told why before a dial, and a pool prefers the members the
// client can use. Bounded: past maxGenerations entries it forgets all.
type Generations struct {
	mu sync.Mutex
	m  map[string]Encoders
}

const maxGenerations = 4096

// Learn records the encoders of the server at key ("tcp:host:port").
func (g *Generations) Learn(key string, e Encoders) {
	if g == nil || e == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil || len(g.m) >= maxGenerations {
		g.m = map[string]Encoders{}
	}
	g.m[key] = e
}

// Of returns what is known of the server at key (0: nothing).
func (g *Generations) Of(key string) Encoders {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[key]
}

// versionOf parses the major and minor numbers of a hello's version
// ("6.5", "3.1.3"); ok is false when there is none.
func versionOf(caps frame.Dict) (major, minor int, ok bool) {
	v, _ := caps.Text("version")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	var err1, err2 error
	major, err1 = strconv.Atoi(parts[0])
	minor, err2 = strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return major, minor, err1 == nil && err2 == nil
}

// Nested reports whether a peer writes its hello as nested dicts (xpra ≥
// 6, #3607) rather than 3.1's flat dotted keys.
func Nested(caps frame.Dict) bool {
	major, _, ok := versionOf(caps)
	return ok && major >= 6
}

// ClaimedVersion is the xpra protocol version the proxy claims to a
// peer: the peer's own generation (major.minor), so that neither side
// warns about an outdated or incompatible proxy; 3.1.3 for 3.x peers and
// hellos without a version. xpraproxy's own version goes beside it.
func ClaimedVersion(caps frame.Dict) string {
	major, minor, ok := versionOf(caps)
	if !ok || major < 4 {
		return XpraVersion
	}
	return strconv.Itoa(major) + "." + strconv.Itoa(minor)
}

// mismatchError is the client's reason when the server speaks another
// generation: the cause and the fix, and the server's own words when it
// refused.
func mismatchError(client, server Encoders, refused string) error {
	msg := Mismatch(client, server)
	if refused != "" {
		msg += " (the server said: " + refused + ")"
	}
	return &disconnect.Error{Stage: disconnect.Backend, Reason: "version error", Message: msg, Refused: refused}
}

// orderByGeneration puts first the candidates a client with encoders c
// can use (or whose generation is not known yet), keeping the pool's
// order within each group.
func orderByGeneration(cands []route.Candidate, c Encoders, g *Generations) []route.Candidate {
	if g == nil || len(cands) < 2 {
		return cands
	}
	out := make([]route.Candidate, 0, len(cands))
	var later []route.Candidate
	for _, cand := range cands {
		if c.Compatible(g.Of(cand.Target.Network + ":" + cand.Target.Address)) {
			out = append(out, cand)
		} else {
			later = append(later, cand)
		}
	}
	return append(out, later...)
}

// requestedDisplay is the display a client asks for (the /N of its URL):
// 3.1 sends it as `display`; 6.x sends `display` as a dict of its display
// caps (#4865) and the request under `session`.
func requestedDisplay(caps frame.Dict) string {
	if d, ok := caps.Text("display"); ok {
		return d
	}
	if sess, ok := caps.Dict("session"); ok {
		d, _ := sess.Text("display")
		return d
	}
	return ""
}
