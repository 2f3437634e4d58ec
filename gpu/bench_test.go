package gpu

import (
	"fmt"
	"sync"
	"testing"
)

// benchBackends are the back ends present on this machine.
func benchBackends() []Backend {
	return Available()
}

// BenchmarkEncode: one frame at a time per back end and size; reports
// frames/s and ms/frame.
func BenchmarkEncode(b *testing.B) {
	for _, be := range benchBackends() {
		for _, sz := range [][2]int{{1920, 1080}, {640, 480}} {
			b.Run(fmt.Sprintf("%s/%dx%d", shortName(be), sz[0], sz[1]), func(b *testing.B) {
				// Moving content: a video encoder given the same picture
				// every time would only measure empty P-frames.
				frames := moving(sz[0], sz[1], 8)
				px := frames[0]
				state := new(any)
				jobs := []Job{{}}
				b.SetBytes(int64(len(px)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					jobs[0] = Job{Frame: &Frame{Window: 1, Width: sz[0], Height: sz[1], Stride: 4 * sz[0], Format: "BGRX", Pixels: frames[i%len(frames)], Seq: int64(i)}, State: state}
					be.Encode(jobs)
					if jobs[0].Out.Err != nil {
						b.Fatal(jobs[0].Out.Err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
				b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/frame")
				be.Close(*state)
			})
		}
	}
}

// BenchmarkPool100Windows: 100 windows each submitting 640x480 frames
// through the pool, batched (16 per call) against one at a time.
func BenchmarkPool100Windows(b *testing.B) {
	for _, be := range benchBackends() {
		for _, batch := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/batch%d", shortName(be), batch), func(b *testing.B) {
				p := NewPool(be, PoolConfig{Workers: 2, BatchSize: batch})
				defer p.Close()
				frames := moving(640, 480, 8)
				px := frames[0]
				var wg sync.WaitGroup
				b.SetBytes(int64(len(px)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					wg.Add(1)
					f := &Frame{Window: uint64(i % 100), Width: 640, Height: 480, Stride: 2560, Format: "BGRX", Pixels: frames[(i/100)%len(frames)], Seq: int64(i)}
					for p.Submit(f, func(r Result) {
						wg.Add(-1 - len(r.Replaced))
					}) != nil {
					}
					// Keep at most 100 frames queued, one per window, so
					// that replacement does not drop work.
					if i%100 == 99 {
						wg.Wait()
					}
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
			})
		}
	}
}

func shortName(b Backend) string {
	switch b.(type) {
	case *CPUJPEG:
		return "cpu-jpeg"
	case *CPUH264:
		return "cpu-h264"
	case *NVJPEG:
		return "nvjpeg"
	case *NVENC:
		return "nvenc"
	}
	return b.Name()
}

// moving is n frames of a gradient scrolling 7 pixels per frame.
func moving(w, h, n int) [][]byte {
	out := make([][]byte, n)
	for k := range out {
		px := make([]byte, 4*w*h)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				i := 4 * (y*w + x)
				xx := x + 7*k
				px[i], px[i+1], px[i+2], px[i+3] = byte(xx), byte(y+xx/3), byte(xx^y), 0xff
			}
		}
		out[k] = px
	}
	return out
}
