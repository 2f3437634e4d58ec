package gpu

import (
	"bytes"
	"image/jpeg"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeBackend records its batches; each window's state counts frames.
type fakeBackend struct {
	mu      sync.Mutex
	batches []int
	closed  atomic.Int64
	delay   time.Duration
}

func (f *fakeBackend) Name() string        { return "fake" }
func (f *fakeBackend) Encodings() []string { return []string{"fake"} }
func (f *fakeBackend) Close(any)           { f.closed.Add(1) }
func (f *fakeBackend) Encode(jobs []Job) {
	f.mu.Lock()
	f.batches = append(f.batches, len(jobs))
	f.mu.Unlock()
	time.Sleep(f.delay)
	seen := map[uint64]bool{}
	for i := range jobs {
		if seen[jobs[i].Frame.Window] {
			panic("two frames of one window in a batch")
		}
		seen[jobs[i].Frame.Window] = true
		n, _ := (*jobs[i].State).(int)
		*jobs[i].State = n + 1
		jobs[i].Out = Result{Encoding: "fake", Data: []byte{byte(n)}}
	}
}

func TestPoolOrderReplacementBatchingIdle(t *testing.T) {
	fb := &fakeBackend{delay: 20 * time.Millisecond}
	p := NewPool(fb, PoolConfig{Workers: 1, BatchSize: 8, IdleClose: 200 * time.Millisecond})
	defer p.Close()
	var mu sync.Mutex
	got := map[uint64][]int64{}
	replaced := map[uint64][]int64{}
	var wg sync.WaitGroup
	// 20 windows, 10 frames each, submitted faster than they encode.
	for seq := int64(0); seq < 10; seq++ {
		for w := uint64(0); w < 20; w++ {
			wg.Add(1)
			f := &Frame{Window: w, Seq: seq}
			err := p.Submit(f, func(r Result) {
				mu.Lock()
				got[w] = append(got[w], r.Frame.Seq)
				replaced[w] = append(replaced[w], r.Replaced...)
				mu.Unlock()
				wg.Done()
				for range r.Replaced {
					wg.Done()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	for w := uint64(0); w < 20; w++ {
		seqs := got[w]
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("window %d results out of order: %v", w, seqs)
			}
		}
		if seqs[len(seqs)-1] != 9 {
			t.Errorf("window %d: the newest frame was not encoded: %v", w, seqs)
		}
		if len(seqs)+len(replaced[w]) != 10 {
			t.Errorf("window %d: %d encoded + %d replaced != 10", w, len(seqs), len(replaced[w]))
		}
	}
	fb.mu.Lock()
	biggest := 0
	for _, b := range fb.batches {
		biggest = max(biggest, b)
	}
	fb.mu.Unlock()
	if biggest != 8 {
		t.Errorf("largest batch %d, want 8 (20 windows ready at once)", biggest)
	}
	// Idle windows lose their state.
	deadline := time.Now().Add(3 * time.Second)
	for p.Windows() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if p.Windows() != 0 || fb.closed.Load() != 20 {
		t.Errorf("after idle: %d windows, %d states closed", p.Windows(), fb.closed.Load())
	}
}

func TestPoolNeverBlocksAndBounds(t *testing.T) {
	fb := &fakeBackend{delay: 200 * time.Millisecond}
	p := NewPool(fb, PoolConfig{Workers: 1, BatchSize: 1, MaxWindows: 3})
	defer p.Close()
	start := time.Now()
	for w := uint64(0); w < 3; w++ {
		for range 100 {
			if err := p.Submit(&Frame{Window: w}, func(Result) {}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.Submit(&Frame{Window: 99}, func(Result) {}); err != ErrPoolFull {
		t.Errorf("fourth window: %v, want ErrPoolFull", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Submit blocked for %v", d)
	}
}

func gradient(w, h int) []byte {
	px := make([]byte, 4*w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := 4 * (y*w + x)
			px[i], px[i+1], px[i+2], px[i+3] = byte(x), byte(y), byte(x+y), 0xff
		}
	}
	return px
}

func TestCPUJPEG(t *testing.T) {
	b := NewCPUJPEG()
	const w, h = 320, 200
	jobs := []Job{{Frame: &Frame{Width: w, Height: h, Stride: 4 * w, Format: "BGRX", Pixels: gradient(w, h), Quality: 90}, State: new(any)},
		{Frame: &Frame{Width: w, Height: h, Stride: 4 * w, Format: "YUV", Pixels: gradient(w, h)}, State: new(any)},
		{Frame: &Frame{Width: w, Height: h, Stride: 4 * w, Format: "RGBX", Pixels: make([]byte, 10)}, State: new(any)}}
	b.Encode(jobs)
	if jobs[0].Out.Err != nil || jobs[0].Out.Encoding != "jpeg" {
		t.Fatalf("%+v", jobs[0].Out)
	}
	img, err := jpeg.Decode(bytes.NewReader(jobs[0].Out.Data))
	if err != nil || img.Bounds().Dx() != w || img.Bounds().Dy() != h {
		t.Fatalf("decode: %v %v", err, img.Bounds())
	}
	// BGRX: byte 0 is blue = x, byte 2 red = x+y.
	r, g, bl, _ := img.At(100, 50).RGBA()
	if d := func(a uint32, want int) int { v := int(a>>8) - want; return max(v, -v) }; d(r, 150) > 12 || d(g, 50) > 12 || d(bl, 100) > 12 {
		t.Errorf("pixel (100,50) = %d %d %d, want about 150 50 100", r>>8, g>>8, bl>>8)
	}
	if jobs[1].Out.Err == nil || jobs[2].Out.Err == nil {
		t.Errorf("bad frames accepted: %v / %v", jobs[1].Out.Err, jobs[2].Out.Err)
	}
}

// TestNVJPEG runs where nvJPEG and a GPU are present (gpu/run-on-gpu.sh on
// the lent H100); elsewhere it says why it cannot.
func TestNVJPEG(t *testing.T) {
	nj, err := NewNVJPEG()
	if err != nil {
		t.Skipf("nvJPEG not available here: %v", err)
	}
	const w, h = 320, 200
	jobs := make([]Job, 3)
	for i := range jobs {
		jobs[i] = Job{Frame: &Frame{Window: uint64(i), Width: w, Height: h, Stride: 4 * w, Format: "BGRX", Pixels: gradient(w, h), Quality: 90}, State: new(any)}
	}
	nj.Encode(jobs)
	for i := range jobs {
		if jobs[i].Out.Err != nil {
			t.Fatal(jobs[i].Out.Err)
		}
		img, err := jpeg.Decode(bytes.NewReader(jobs[i].Out.Data))
		if err != nil || img.Bounds().Dx() != w {
			t.Fatalf("decode: %v", err)
		}
		r, g, bl, _ := img.At(100, 50).RGBA()
		if d := func(a uint32, want int) int { v := int(a>>8) - want; return max(v, -v) }; d(r, 150) > 12 || d(g, 50) > 12 || d(bl, 100) > 12 {
			t.Errorf("pixel (100,50) = %d %d %d, want about 150 50 100", r>>8, g>>8, bl>>8)
		}
	}
}

// One H.264 stream per window: an IDR first, frames numbered, the stream
// restarted on resize, state freed by Close.
func TestCPUH264(t *testing.T) {
	b := NewCPUH264()
	state := new(any)
	enc := func(w, h int) Result {
		jobs := []Job{{Frame: &Frame{Width: w, Height: h, Stride: 4 * w, Format: "BGRX", Pixels: gradient(w, h), Quality: 60}, State: state}}
		b.Encode(jobs)
		if jobs[0].Out.Err != nil {
			t.Fatal(jobs[0].Out.Err)
		}
		return jobs[0].Out
	}
	first := enc(321, 201) // odd sizes are padded
	if first.Encoding != "h264" || !bytes.HasPrefix(first.Data, []byte{0, 0, 0, 1}) || first.Options["type"] != "IDR" ||
		first.Options["frame"] != int64(0) || first.Options["csc"] != "YUV420P" {
		t.Fatalf("first frame: %v %x", first.Options, first.Data[:min(8, len(first.Data))])
	}
	second := enc(321, 201)
	if second.Options["frame"] != int64(1) || second.Options["type"] == "IDR" || len(second.Data) >= len(first.Data) {
		t.Errorf("second frame of an unchanged picture: %v, %d bytes after %d", second.Options, len(second.Data), len(first.Data))
	}
	resized := enc(200, 100)
	if resized.Options["frame"] != int64(0) || resized.Options["type"] != "IDR" {
		t.Errorf("after a resize: %v", resized.Options)
	}
	b.Close(*state)
}

// TestNVENC runs where a GPU has NVENC; on the H100 (no NVENC) it shows
// the reason NewNVENC gives, which Choose then falls back from.
func TestNVENC(t *testing.T) {
	nv, err := NewNVENC()
	if err != nil {
		if d := Discover(); d.Err == "" {
			if b, _, cerr := Choose("auto", d); cerr != nil || b.Name() == "nvenc (NVIDIA Video Codec API)" {
				t.Errorf("auto chose %v (%v) although NVENC is unusable: %v", b, cerr, err)
			}
		}
		t.Skipf("NVENC not available here: %v", err)
	}
	b := nv
	state := new(any)
	const w, h = 640, 480
	for i := 0; i < 3; i++ {
		jobs := []Job{{Frame: &Frame{Width: w, Height: h, Stride: 4 * w, Format: "BGRX", Pixels: gradient(w, h)}, State: state}}
		b.Encode(jobs)
		if jobs[0].Out.Err != nil || !bytes.HasPrefix(jobs[0].Out.Data, []byte{0, 0, 0, 1}) || jobs[0].Out.Options["frame"] != int64(i) {
			t.Fatalf("frame %d: %v %v", i, jobs[0].Out.Err, jobs[0].Out.Options)
		}
	}
	b.Close(*state)
}
