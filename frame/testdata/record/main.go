// Command record is a recording TCP relay for making frame/'s capture
// fixture: it accepts one connection, dials the real xpra server, copies
// bytes both ways unchanged and writes each direction to a file, stopping
// the recording (not the relay) at the first frame boundary after -limit
// bytes so that the capture stays small and ends on whole packets.
//
//	go run ./frame/testdata/record -listen 127.0.0.1:PORT -target 127.0.0.1:PORT -out DIR
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/xpraproxy/xpraproxy/frame"
)

// recorder writes the stream to a file up to the first frame boundary past
// limit bytes.
type recorder struct {
	f       *os.File
	limit   int
	written int
	pending []byte
	done    bool
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.done {
		return len(p), nil
	}
	r.pending = append(r.pending, p...)
	for !r.done {
		// Write whole frames only.
		if len(r.pending) < frame.HeaderSize {
			break
		}
		n, h, err := frame.FrameLen(r.pending, frame.AbsMaxPacketSize)
		if err != nil {
			log.Printf("%s: %v; stopping the recording", r.f.Name(), err)
			r.done = true
			break
		}
		if len(r.pending) < n {
			break
		}
		if _, err := r.f.Write(r.pending[:n]); err != nil {
			return 0, err
		}
		r.written += n
		r.pending = r.pending[n:]
		// Stop after a main packet, so the capture ends between packets.
		if r.written >= r.limit && h.Index == 0 {
			r.done = true
		}
	}
	return len(p), nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to accept the client on")
	target := flag.String("target", "", "xpra server address")
	out := flag.String("out", ".", "directory for c2s.bin and s2c.bin")
	limit := flag.Int("limit", 256<<10, "bytes to record per direction (rounded up to a packet)")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	s, err := net.Dial("tcp", *target)
	if err != nil {
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn, name string) {
		defer wg.Done()
		f, err := os.Create(filepath.Join(*out, name))
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		_, err = io.Copy(io.MultiWriter(dst, &recorder{f: f, limit: *limit}), src)
		log.Printf("%s: %v", name, err)
		dst.(*net.TCPConn).CloseWrite()
	}
	wg.Add(2)
	go pipe(s, c, "c2s.bin")
	go pipe(c, s, "s2c.bin")
	wg.Wait()
}
