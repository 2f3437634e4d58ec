package loop

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzParked: whatever was split between gnet's buffer at the park and
// the socket afterwards, and however the session consumes it, a parked
// stand-in hands over the stream unchanged and in order, and what is
// written to it reaches the peer unchanged.
func FuzzParked(f *testing.F) {
	f.Add([]byte("hello, parked socket"), uint8(5), []byte{3, 0, 7, 200})
	f.Add(bytes.Repeat([]byte{0xff}, 5000), uint8(255), []byte{255, 1})
	f.Add([]byte{}, uint8(0), []byte{})
	f.Fuzz(fuzzParkedBody)
}

func fuzzParkedBody(t *testing.T, data []byte, split uint8, steps []byte) {
	{
		if len(data) > 60<<10 {
			data = data[:60<<10]
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Skip(err)
		}
		defer unix.Close(fds[1])
		// Neither end blocks: a test that could wait would hang the fuzzer.
		unix.SetNonblock(fds[0], true)
		unix.SetNonblock(fds[1], true)
		at := min(int(split)*len(data)/255, len(data))
		p := &parked{fd: fds[0]}
		p.take(&fakeGnet{in: data[:at]})
		if rest := data[at:]; len(rest) > 0 {
			if n, err := unix.Write(fds[1], rest); err != nil || n != len(rest) {
				t.Fatalf("write %d: %d %v", len(rest), n, err)
			}
		}
		var got []byte
		for i := 0; len(got) < len(data); i++ {
			if p.InboundBuffered() == 0 && !p.fill() {
				t.Fatalf("fill found nothing with %d of %d bytes read", len(got), len(data))
			}
			step := p.InboundBuffered()
			if len(steps) > 0 {
				step = min(int(steps[i%len(steps)])+1, step)
			}
			b, err := p.Peek(step)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b...)
			p.Discard(step)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("stream changed: %d bytes in, %d out", len(data), len(got))
		}
		if _, err := p.Writev([][]byte{data, []byte("end")}); err != nil {
			t.Fatal(err)
		}
		p.Flush()
		if p.OutboundBuffered() != 0 {
			t.Fatalf("%d bytes left queued for an idle peer", p.OutboundBuffered())
		}
		want := append(append([]byte(nil), data...), "end"...)
		back := make([]byte, len(want)+1)
		n := 0
		for n < len(want) {
			m, err := unix.Read(fds[1], back[n:])
			if err != nil || m == 0 {
				break
			}
			n += m
		}
		if !bytes.Equal(back[:n], want) {
			t.Fatalf("written %d bytes, the peer read %d", len(want), n)
		}
		p.closed = true // the descriptor is closed here, not through fail
		unix.Close(fds[0])
	}
}
