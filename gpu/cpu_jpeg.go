package gpu

/*
#cgo LDFLAGS: -l:libturbojpeg.a
#include <stdlib.h>
#include <turbojpeg.h>

static int pixfmt(int code) {
	switch (code) {
	case 0: return TJPF_BGRX;
	case 1: return TJPF_BGRA;
	case 2: return TJPF_RGBX;
	default: return TJPF_RGBA;
	}
}

// compress encodes packed pixels; *out is allocated by libjpeg-turbo and
// freed by the caller with tjFree.
static int compress(tjhandle h, unsigned char *px, int w, int stride, int ht, int fmt, int quality,
		unsigned char **out, unsigned long *size) {
	*out = NULL;
	*size = 0;
	return tjCompress2(h, px, w, stride, ht, pixfmt(fmt), out, size, TJSAMP_420, quality, TJFLAG_FASTDCT);
}
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// CPUJPEG is the back end that always works: libjpeg-turbo on the CPU,
// straight from xpra's BGRX/RGBX input (no separate colour conversion).
// JPEG is stateless, so windows have no state and a batch is simply its
// frames one after the other; parallelism comes from the pool's workers.
type CPUJPEG struct {
	handles sync.Pool // tjhandle per concurrent worker (they are not thread-safe)
	// DefaultQuality applies when a frame has none (xpra's default 80).
	DefaultQuality int
}

// NewCPUJPEG makes the back end.
func NewCPUJPEG() *CPUJPEG {
	return &CPUJPEG{DefaultQuality: 80}
}

func (c *CPUJPEG) Name() string        { return "cpu-jpeg (libjpeg-turbo)" }
func (c *CPUJPEG) Encodings() []string { return []string{"jpeg"} }
func (c *CPUJPEG) Close(any)           {}

func formatCode(f string) (C.int, error) {
	switch f {
	case "BGRX":
		return 0, nil
	case "BGRA":
		return 1, nil
	case "RGBX":
		return 2, nil
	case "RGBA":
		return 3, nil
	}
	return 0, fmt.Errorf("gpu: unsupported pixel format %q", f)
}

// Encode compresses each frame in turn.
func (c *CPUJPEG) Encode(jobs []Job) {
	h, _ := c.handles.Get().(C.tjhandle)
	if h == nil {
		h = C.tjInitCompress()
		if h == nil {
			for i := range jobs {
				jobs[i].Out.Err = fmt.Errorf("gpu: tjInitCompress failed")
			}
			return
		}
	}
	defer c.handles.Put(h)
	for i := range jobs {
		jobs[i].Out = c.one(h, jobs[i].Frame)
	}
}

func (c *CPUJPEG) one(h C.tjhandle, f *Frame) Result {
	if _, err := checkFrame(f); err != nil {
		return Result{Err: err}
	}
	code, err := formatCode(f.Format)
	if err != nil {
		return Result{Err: err}
	}
	q := f.Quality
	if q <= 0 || q > 100 {
		q = c.DefaultQuality
	}
	var out *C.uchar
	var size C.ulong
	// The pixels are Go memory, only read by C during the call.
	rc := C.compress(h, (*C.uchar)(unsafe.Pointer(&f.Pixels[0])), C.int(f.Width), C.int(f.Stride), C.int(f.Height),
		code, C.int(q), &out, &size)
	if rc != 0 {
		msg := C.GoString(C.tjGetErrorStr2(h))
		if out != nil {
			C.tjFree(out)
		}
		return Result{Err: fmt.Errorf("gpu: jpeg: %s", msg)}
	}
	data := C.GoBytes(unsafe.Pointer(out), C.int(size))
	C.tjFree(out)
	return Result{Encoding: "jpeg", Data: data, Options: map[string]any{"quality": q}}
}
