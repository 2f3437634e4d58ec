package bench

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// xpra's AES on the client link (docs/aes.md): the proxy's tcp port with
// --tcp-encryption=AES. The 3.1 peer speaks 3.1's AES-CBC, the 6.x peer
// 6.x's nested caps with the mode its transport names.
const (
	TransportAES    = "aes"     // AES-CBC
	TransportAESCTR = "aes-ctr" // AES-CTR (6.x peers)
)

func isAES(transport string) bool {
	return transport == TransportAES || transport == TransportAESCTR
}

// aesArgs writes the key file the proxy and the clients share and returns
// the proxy's options for it.
func aesArgs(dir string) (keyFile string, args []string, err error) {
	keyFile = filepath.Join(dir, "aes.key")
	// Readable by the proxy under test (nobody); a throwaway key.
	if err := os.WriteFile(keyFile, []byte("bench-aes-key-0123456789"), 0o644); err != nil {
		return "", nil, err
	}
	return keyFile, []string{"--tcp-encryption=AES", "--tcp-encryption-keyfile=" + keyFile}, nil
}

// dialAES returns a plain xpra stream whose other end logs in over nc
// with AES: relay.Login sends the engine's hello with the cipher's caps
// and answers the proxy's challenge, the proxy's hello is handed to the
// engine as if it had come on the wire, and from then on two goroutines
// (generator side, like the TLS and SSH bridges) seal and open.
func dialAES(nc net.Conn, transport, peer, password, keyFile string) (net.Conn, error) {
	mode := "AES-CBC"
	if transport == TransportAESCTR {
		mode = "AES-CTR"
	}
	enc := peerWriter(peer).Encoding
	ours, theirs, err := socketPair("aes")
	if err != nil {
		nc.Close()
		return nil, err
	}
	go func() {
		b, err := aesLogin(ours, nc, enc, mode, password, keyFile)
		if err != nil {
			ours.Close()
			nc.Close()
			return
		}
		rw := b.ReadWriter()
		go func() { io.Copy(rw, ours); nc.Close() }()
		io.Copy(ours, rw)
		ours.Close()
	}()
	return theirs, nil
}

func aesLogin(engine, nc net.Conn, enc frame.Encoding, mode, password, keyFile string) (*relay.Backend, error) {
	engine.SetReadDeadline(time.Now().Add(30 * time.Second))
	p, err := frame.NewStreamReader(engine, 1<<20).ReadPacket()
	engine.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	hello, _ := p[1].(frame.Dict)
	if p.Type() != "hello" || hello == nil {
		return nil, errors.New("bench: the engine's first packet is not a hello")
	}
	b, err := relay.Login(nc, relay.DialConfig{Hello: hello, Encoding: enc, Password: password,
		Timeout: 30 * time.Second, MaxPacketSize: 1 << 20,
		Link: &relay.LinkOptions{Encryption: mode, EncryptionKeyFile: keyFile}})
	if err != nil {
		return nil, err
	}
	w := frame.Writer{Encoding: enc}
	out, err := w.AppendPacket(nil, frame.Packet{"hello", b.Hello})
	if err == nil {
		_, err = engine.Write(out)
	}
	if err != nil {
		b.Conn.Close()
		return nil, err
	}
	return b, nil
}
