package gpu

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// nvJPEG and the CUDA runtime are loaded at run time (dlopen): the binary
// neither links nor needs them. The few types used are declared here as
// the CUDA 12/13 headers define them.
typedef void *cudaStream_t;
typedef void *nvjpegHandle_t;
typedef void *nvjpegEncoderState_t;
typedef void *nvjpegEncoderParams_t;
typedef struct { unsigned char *channel[4]; size_t pitch[4]; } nvjpegImage_t;
enum { NVJPEG_INPUT_BGRI = 6, NVJPEG_CSS_420 = 2, cudaMemcpyHostToDevice = 1 };

static void *lib_nvjpeg, *lib_cudart;
static int (*p_cudaMalloc)(void **, size_t);
static int (*p_cudaFree)(void *);
static int (*p_cudaMemcpyAsync)(void *, const void *, size_t, int, cudaStream_t);
static int (*p_cudaStreamCreate)(cudaStream_t *);
static int (*p_cudaStreamDestroy)(cudaStream_t);
static int (*p_cudaStreamSynchronize)(cudaStream_t);
static int (*p_cudaMallocHost)(void **, size_t);
static int (*p_cudaFreeHost)(void *);
static int (*p_nvjpegCreateSimple)(nvjpegHandle_t *);
static int (*p_nvjpegDestroy)(nvjpegHandle_t);
static int (*p_nvjpegEncoderStateCreate)(nvjpegHandle_t, nvjpegEncoderState_t *, cudaStream_t);
static int (*p_nvjpegEncoderStateDestroy)(nvjpegEncoderState_t);
static int (*p_nvjpegEncoderParamsCreate)(nvjpegHandle_t, nvjpegEncoderParams_t *, cudaStream_t);
static int (*p_nvjpegEncoderParamsDestroy)(nvjpegEncoderParams_t);
static int (*p_nvjpegEncoderParamsSetQuality)(nvjpegEncoderParams_t, int, cudaStream_t);
static int (*p_nvjpegEncoderParamsSetSamplingFactors)(nvjpegEncoderParams_t, int, cudaStream_t);
static int (*p_nvjpegEncodeImage)(nvjpegHandle_t, nvjpegEncoderState_t, nvjpegEncoderParams_t, const nvjpegImage_t *, int, int, int, cudaStream_t);
static int (*p_nvjpegEncodeRetrieveBitstream)(nvjpegHandle_t, nvjpegEncoderState_t, unsigned char *, size_t *, cudaStream_t);

static void *open_first(const char **names) {
	for (; *names; names++) {
		void *h = dlopen(*names, RTLD_NOW | RTLD_LOCAL);
		if (h) return h;
	}
	return NULL;
}

#define SYM(lib, name) do { *(void **)(&p_##name) = dlsym(lib, #name); if (!p_##name) return "missing symbol " #name; } while (0)

// nvj_load returns NULL on success, else why.
static const char *nvj_load(void) {
	static const char *nj[] = {"libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so.11", "libnvjpeg.so", NULL};
	static const char *rt[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so", NULL};
	if (lib_nvjpeg) return NULL;
	lib_cudart = open_first(rt);
	if (!lib_cudart) return "libcudart not found";
	void *n = open_first(nj);
	if (!n) return "libnvjpeg not found";
	SYM(lib_cudart, cudaMalloc); SYM(lib_cudart, cudaFree); SYM(lib_cudart, cudaMemcpyAsync);
	SYM(lib_cudart, cudaStreamCreate); SYM(lib_cudart, cudaStreamDestroy); SYM(lib_cudart, cudaStreamSynchronize);
	SYM(lib_cudart, cudaMallocHost); SYM(lib_cudart, cudaFreeHost);
	SYM(n, nvjpegCreateSimple); SYM(n, nvjpegDestroy);
	SYM(n, nvjpegEncoderStateCreate); SYM(n, nvjpegEncoderStateDestroy);
	SYM(n, nvjpegEncoderParamsCreate); SYM(n, nvjpegEncoderParamsDestroy);
	SYM(n, nvjpegEncoderParamsSetQuality); SYM(n, nvjpegEncoderParamsSetSamplingFactors);
	SYM(n, nvjpegEncodeImage); SYM(n, nvjpegEncodeRetrieveBitstream);
	lib_nvjpeg = n;
	return NULL;
}

// One slot encodes one frame on its own stream; a batch uses several
// slots, so the GPU works on all its frames at once.
typedef struct {
	cudaStream_t stream;
	nvjpegEncoderState_t state;
	nvjpegEncoderParams_t params;
	unsigned char *host;   // pinned BGR staging
	unsigned char *dev;    // device BGR
	size_t cap;
	int quality;
} slot_t;

static int nvj_handle(nvjpegHandle_t *h) { return p_nvjpegCreateSimple(h); }

static int slot_init(nvjpegHandle_t h, slot_t *s) {
	memset(s, 0, sizeof(*s));
	int rc;
	if ((rc = p_cudaStreamCreate(&s->stream))) return 1000 + rc;
	if ((rc = p_nvjpegEncoderStateCreate(h, &s->state, s->stream))) return 2000 + rc;
	if ((rc = p_nvjpegEncoderParamsCreate(h, &s->params, s->stream))) return 3000 + rc;
	if ((rc = p_nvjpegEncoderParamsSetSamplingFactors(s->params, NVJPEG_CSS_420, s->stream))) return 4000 + rc;
	return 0;
}

static void slot_free(slot_t *s) {
	if (s->dev) p_cudaFree(s->dev);
	if (s->host) p_cudaFreeHost(s->host);
	if (s->params) p_nvjpegEncoderParamsDestroy(s->params);
	if (s->state) p_nvjpegEncoderStateDestroy(s->state);
	if (s->stream) p_cudaStreamDestroy(s->stream);
	memset(s, 0, sizeof(*s));
}

// slot_submit converts 4-byte pixels to interleaved BGR in pinned memory
// (nvJPEG takes no 4-channel input), copies them to the GPU and queues the
// encode on the slot's stream; it does not wait.
static int slot_submit(nvjpegHandle_t h, slot_t *s, const unsigned char *px, int w, int ht, int stride, int rgb, int quality) {
	size_t need = (size_t)w * 3 * ht;
	int rc;
	if (need > s->cap) {
		if (s->dev) { p_cudaFree(s->dev); s->dev = NULL; }
		if (s->host) { p_cudaFreeHost(s->host); s->host = NULL; }
		if ((rc = p_cudaMalloc((void **)&s->dev, need))) return 5000 + rc;
		if ((rc = p_cudaMallocHost((void **)&s->host, need))) return 5100 + rc;
		s->cap = need;
	}
	if (quality != s->quality) {
		if ((rc = p_nvjpegEncoderParamsSetQuality(s->params, quality, s->stream))) return 6000 + rc;
		s->quality = quality;
	}
	for (int y = 0; y < ht; y++) {
		const unsigned char *src = px + (size_t)y * stride;
		unsigned char *dst = s->host + (size_t)y * w * 3;
		if (rgb) {
			for (int x = 0; x < w; x++) { dst[3*x] = src[4*x+2]; dst[3*x+1] = src[4*x+1]; dst[3*x+2] = src[4*x]; }
		} else {
			for (int x = 0; x < w; x++) { dst[3*x] = src[4*x]; dst[3*x+1] = src[4*x+1]; dst[3*x+2] = src[4*x+2]; }
		}
	}
	if ((rc = p_cudaMemcpyAsync(s->dev, s->host, need, cudaMemcpyHostToDevice, s->stream))) return 7000 + rc;
	nvjpegImage_t img;
	memset(&img, 0, sizeof(img));
	img.channel[0] = s->dev;
	img.pitch[0] = (size_t)w * 3;
	if ((rc = p_nvjpegEncodeImage(h, s->state, s->params, &img, NVJPEG_INPUT_BGRI, w, ht, s->stream))) return 8000 + rc;
	return 0;
}

// slot_size waits for the slot's encode and returns the bitstream length.
static int slot_size(nvjpegHandle_t h, slot_t *s, size_t *len) {
	int rc;
	if ((rc = p_nvjpegEncodeRetrieveBitstream(h, s->state, NULL, len, s->stream))) return 9000 + rc;
	if ((rc = p_cudaStreamSynchronize(s->stream))) return 9100 + rc;
	return 0;
}

static int slot_copy(nvjpegHandle_t h, slot_t *s, unsigned char *out, size_t *len) {
	int rc;
	if ((rc = p_nvjpegEncodeRetrieveBitstream(h, s->state, out, len, s->stream))) return 9200 + rc;
	if ((rc = p_cudaStreamSynchronize(s->stream))) return 9300 + rc;
	return 0;
}
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// NVJPEG is the jpeg back end for GPUs without NVENC (the H100 and
// H200): nvJPEG through dlopen. A batch is encoded on as many CUDA
// streams as it has frames, all queued before any is waited for.
type NVJPEG struct {
	handle C.nvjpegHandle_t
	// Slot sets, one per concurrent Encode; a free list, not a sync.Pool,
	// which would drop them at each GC and recreate CUDA streams.
	mu    sync.Mutex
	slots []*[]C.slot_t
	// DefaultQuality applies when a frame has none.
	DefaultQuality int
}

var (
	nvjOnce sync.Once
	nvjErr  error
)

// NewNVJPEG loads nvJPEG and the CUDA runtime and makes a handle; an error
// (no library, no device) means the back end is not available.
func NewNVJPEG() (*NVJPEG, error) {
	nvjOnce.Do(func() {
		if why := C.nvj_load(); why != nil {
			nvjErr = fmt.Errorf("gpu: nvjpeg: %s", C.GoString(why))
		}
	})
	if nvjErr != nil {
		return nil, nvjErr
	}
	n := &NVJPEG{DefaultQuality: 80}
	if rc := C.nvj_handle(&n.handle); rc != 0 {
		return nil, fmt.Errorf("gpu: nvjpegCreateSimple: error %d (no usable GPU?)", int(rc))
	}
	return n, nil
}

func (n *NVJPEG) Name() string        { return "nvjpeg (CUDA)" }
func (n *NVJPEG) Encodings() []string { return []string{"jpeg"} }
func (n *NVJPEG) Close(any)           {}

// Encode queues every frame of the batch on its own stream, then collects
// the bitstreams.
func (n *NVJPEG) Encode(jobs []Job) {
	var sp *[]C.slot_t
	n.mu.Lock()
	if k := len(n.slots); k > 0 {
		sp, n.slots = n.slots[k-1], n.slots[:k-1]
	}
	n.mu.Unlock()
	if sp == nil {
		s := make([]C.slot_t, 0, len(jobs))
		sp = &s
	}
	defer func() {
		n.mu.Lock()
		n.slots = append(n.slots, sp)
		n.mu.Unlock()
	}()
	// The slots hold only C and device pointers, so Go may keep them.
	for len(*sp) < len(jobs) {
		var s C.slot_t
		if rc := C.slot_init(n.handle, &s); rc != 0 {
			for i := range jobs {
				jobs[i].Out.Err = fmt.Errorf("gpu: nvjpeg slot: error %d", int(rc))
			}
			return
		}
		*sp = append(*sp, s)
	}
	slots := *sp
	ok := make([]bool, len(jobs))
	for i := range jobs {
		f := jobs[i].Frame
		isRGB, err := checkFrame(f)
		rgb := b2i(isRGB)
		if err != nil {
			jobs[i].Out.Err = err
			continue
		}
		q := f.Quality
		if q <= 0 || q > 100 {
			q = n.DefaultQuality
		}
		if rc := C.slot_submit(n.handle, &slots[i], (*C.uchar)(unsafe.Pointer(&f.Pixels[0])), C.int(f.Width), C.int(f.Height),
			C.int(f.Stride), C.int(rgb), C.int(q)); rc != 0 {
			jobs[i].Out.Err = fmt.Errorf("gpu: nvjpeg encode: error %d", int(rc))
			continue
		}
		ok[i] = true
	}
	for i := range jobs {
		if !ok[i] {
			continue
		}
		var size C.size_t
		if rc := C.slot_size(n.handle, &slots[i], &size); rc != 0 {
			jobs[i].Out.Err = fmt.Errorf("gpu: nvjpeg bitstream: error %d", int(rc))
			continue
		}
		out := make([]byte, int(size))
		if rc := C.slot_copy(n.handle, &slots[i], (*C.uchar)(unsafe.Pointer(&out[0])), &size); rc != 0 {
			jobs[i].Out.Err = fmt.Errorf("gpu: nvjpeg bitstream: error %d", int(rc))
			continue
		}
		jobs[i].Out = Result{Encoding: "jpeg", Data: out[:int(size)], Options: map[string]any{"quality": int(slots[i].quality)}}
	}
}
