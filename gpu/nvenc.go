package gpu

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <ffnvcodec/dynlink_cuda.h>
#include <ffnvcodec/nvEncodeAPI.h>

// NVML's encoder capacity is not proof of an encoder (an H100 reports
// 100 % for h264 and hevc and has no NVENC). The proof is opening an
// encode session: this probe dlopens the CUDA driver and
// libnvidia-encode, opens one session per device and lists its codecs.
typedef NVENCSTATUS (NVENCAPI *tCreateInstance)(NV_ENCODE_API_FUNCTION_LIST *);
typedef NVENCSTATUS (NVENCAPI *tMaxVersion)(uint32_t *);

static int same_guid(GUID a, GUID b) { return memcmp(&a, &b, sizeof(GUID)) == 0; }

// The libraries and the NVENC function table, loaded once.
static NV_ENCODE_API_FUNCTION_LIST nv_fl;
static tcuInit *p_cuInit;
static tcuDeviceGet *p_cuDeviceGet;
static tcuCtxCreate_v2 *p_cuCtxCreate;
static tcuCtxDestroy_v2 *p_cuCtxDestroy;
static tMaxVersion p_maxv;

static const char *nv_load(void) {
	static int done;
	static const char *err;
	if (done) return err;
	done = 1;
	void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!cu) return err = "libcuda.so.1 not found";
	void *enc = dlopen("libnvidia-encode.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!enc) return err = "libnvidia-encode.so.1 not found";
	p_cuInit = (tcuInit *)dlsym(cu, "cuInit");
	p_cuDeviceGet = (tcuDeviceGet *)dlsym(cu, "cuDeviceGet");
	p_cuCtxCreate = (tcuCtxCreate_v2 *)dlsym(cu, "cuCtxCreate_v2");
	p_cuCtxDestroy = (tcuCtxDestroy_v2 *)dlsym(cu, "cuCtxDestroy_v2");
	tCreateInstance create = (tCreateInstance)dlsym(enc, "NvEncodeAPICreateInstance");
	p_maxv = (tMaxVersion)dlsym(enc, "NvEncodeAPIGetMaxSupportedVersion");
	if (!p_cuInit || !p_cuDeviceGet || !p_cuCtxCreate || !p_cuCtxDestroy || !create || !p_maxv)
		return err = "missing CUDA or NVENC symbols";
	if (p_cuInit(0) != 0) return err = "cuInit failed";
	memset(&nv_fl, 0, sizeof(nv_fl));
	nv_fl.version = NV_ENCODE_API_FUNCTION_LIST_VER;
	if (create(&nv_fl) != NV_ENC_SUCCESS || !nv_fl.nvEncOpenEncodeSessionEx) return err = "NvEncodeAPICreateInstance failed";
	return NULL;
}

// nvenc_probe fills h264/hevc for device ord; returns NULL, or why not
// (written into why).
static const char *nvenc_probe(int ord, int *h264, int *hevc, unsigned *maxver, char *why, int whylen) {
	*h264 = *hevc = 0;
	const char *err = nv_load();
	if (err) return err;
	if (p_maxv(maxver) != NV_ENC_SUCCESS) return "NvEncodeAPIGetMaxSupportedVersion failed";
	CUdevice dev;
	CUcontext ctx;
	if (p_cuDeviceGet(&dev, ord) != 0) return "no CUDA device";
	if (p_cuCtxCreate(&ctx, 0, dev) != 0) return "cannot create a CUDA context";
	const char *res = NULL;
	NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS p;
	memset(&p, 0, sizeof(p));
	p.version = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER;
	p.deviceType = NV_ENC_DEVICE_TYPE_CUDA;
	p.device = ctx;
	p.apiVersion = NVENCAPI_VERSION;
	void *session = NULL;
	NVENCSTATUS st = nv_fl.nvEncOpenEncodeSessionEx(&p, &session);
	if (st != NV_ENC_SUCCESS) {
		snprintf(why, whylen, "nvEncOpenEncodeSessionEx: NVENCSTATUS %d (%s)", (int)st,
			st == NV_ENC_ERR_NO_ENCODE_DEVICE ? "no encode device" :
			st == NV_ENC_ERR_UNSUPPORTED_DEVICE ? "unsupported device" :
			st == NV_ENC_ERR_OUT_OF_MEMORY ? "out of memory or sessions" : "see nvEncodeAPI.h");
		res = why;
		goto out;
	}
	uint32_t n = 0;
	if (nv_fl.nvEncGetEncodeGUIDCount(session, &n) == NV_ENC_SUCCESS && n > 0 && n < 32) {
		GUID guids[32];
		uint32_t got = 0;
		if (nv_fl.nvEncGetEncodeGUIDs(session, guids, n, &got) == NV_ENC_SUCCESS) {
			for (uint32_t i = 0; i < got; i++) {
				if (same_guid(guids[i], NV_ENC_CODEC_H264_GUID)) *h264 = 1;
				if (same_guid(guids[i], NV_ENC_CODEC_HEVC_GUID)) *hevc = 1;
			}
		}
	}
	nv_fl.nvEncDestroyEncoder(session);
out:
	p_cuCtxDestroy(ctx);
	return res;
}

// ---- the NVENC encoding back end ----
// One session per window (an H.264 stream is stateful), all in one CUDA
// context. A batch submits every frame's picture before it waits for any
// bitstream, so the encoder works on several sessions at once.
static CUcontext nv_ctx;

// nv_init makes the encoders' CUDA context on GPU 0.
static const char *nv_init(void) {
	static int done;
	static const char *err;
	if (done) return err;
	done = 1;
	if ((err = nv_load())) return err;
	CUdevice dev;
	if (p_cuDeviceGet(&dev, 0) || p_cuCtxCreate(&nv_ctx, 0, dev)) return err = "no CUDA device";
	return NULL;
}

typedef struct {
	void *session;
	NV_ENC_INPUT_PTR in;
	NV_ENC_OUTPUT_PTR out;
	int w, h;          // even stream size
	long frames;
} nvs_t;

static int nvs_open(nvs_t *s, int w, int h, int qp) {
	memset(s, 0, sizeof(*s));
	NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS p;
	memset(&p, 0, sizeof(p));
	p.version = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER;
	p.deviceType = NV_ENC_DEVICE_TYPE_CUDA;
	p.device = nv_ctx;
	p.apiVersion = NVENCAPI_VERSION;
	NVENCSTATUS st = nv_fl.nvEncOpenEncodeSessionEx(&p, &s->session);
	if (st != NV_ENC_SUCCESS) return 100 + st;
	NV_ENC_PRESET_CONFIG pc;
	memset(&pc, 0, sizeof(pc));
	pc.version = NV_ENC_PRESET_CONFIG_VER;
	pc.presetCfg.version = NV_ENC_CONFIG_VER;
	st = nv_fl.nvEncGetEncodePresetConfigEx(s->session, NV_ENC_CODEC_H264_GUID, NV_ENC_PRESET_P4_GUID, NV_ENC_TUNING_INFO_LOW_LATENCY, &pc);
	if (st != NV_ENC_SUCCESS) return 200 + st;
	NV_ENC_CONFIG cfg = pc.presetCfg;
	cfg.gopLength = NVENC_INFINITE_GOPLENGTH;
	cfg.frameIntervalP = 1; // no B-frames: every frame decodes at once
	cfg.rcParams.rateControlMode = NV_ENC_PARAMS_RC_CONSTQP;
	cfg.rcParams.constQP.qpInterP = qp;
	cfg.rcParams.constQP.qpInterB = qp;
	cfg.rcParams.constQP.qpIntra = qp > 4 ? qp - 4 : qp;
	cfg.encodeCodecConfig.h264Config.idrPeriod = NVENC_INFINITE_GOPLENGTH;
	cfg.encodeCodecConfig.h264Config.repeatSPSPPS = 1;
	NV_ENC_INITIALIZE_PARAMS ip;
	memset(&ip, 0, sizeof(ip));
	ip.version = NV_ENC_INITIALIZE_PARAMS_VER;
	ip.encodeGUID = NV_ENC_CODEC_H264_GUID;
	ip.presetGUID = NV_ENC_PRESET_P4_GUID;
	ip.tuningInfo = NV_ENC_TUNING_INFO_LOW_LATENCY;
	ip.encodeWidth = ip.darWidth = w;
	ip.encodeHeight = ip.darHeight = h;
	ip.frameRateNum = 30;
	ip.frameRateDen = 1;
	ip.enablePTD = 1;
	ip.encodeConfig = &cfg;
	if ((st = nv_fl.nvEncInitializeEncoder(s->session, &ip)) != NV_ENC_SUCCESS) return 300 + st;
	NV_ENC_CREATE_INPUT_BUFFER ib;
	memset(&ib, 0, sizeof(ib));
	ib.version = NV_ENC_CREATE_INPUT_BUFFER_VER;
	ib.width = w;
	ib.height = h;
	ib.bufferFmt = NV_ENC_BUFFER_FORMAT_ARGB; // BGRX bytes in memory
	if ((st = nv_fl.nvEncCreateInputBuffer(s->session, &ib)) != NV_ENC_SUCCESS) return 400 + st;
	s->in = ib.inputBuffer;
	NV_ENC_CREATE_BITSTREAM_BUFFER bb;
	memset(&bb, 0, sizeof(bb));
	bb.version = NV_ENC_CREATE_BITSTREAM_BUFFER_VER;
	if ((st = nv_fl.nvEncCreateBitstreamBuffer(s->session, &bb)) != NV_ENC_SUCCESS) return 500 + st;
	s->out = bb.bitstreamBuffer;
	s->w = w;
	s->h = h;
	return 0;
}

static void nvs_close(nvs_t *s) {
	if (s->session) {
		if (s->in) nv_fl.nvEncDestroyInputBuffer(s->session, s->in);
		if (s->out) nv_fl.nvEncDestroyBitstreamBuffer(s->session, s->out);
		nv_fl.nvEncDestroyEncoder(s->session);
	}
	memset(s, 0, sizeof(*s));
}

// nvs_submit copies the picture (RGB order swapped when rgb) into the
// input buffer and queues it; it does not wait.
static int nvs_submit(nvs_t *s, const unsigned char *px, int w, int h, int stride, int rgb) {
	NV_ENC_LOCK_INPUT_BUFFER li;
	memset(&li, 0, sizeof(li));
	li.version = NV_ENC_LOCK_INPUT_BUFFER_VER;
	li.inputBuffer = s->in;
	NVENCSTATUS st = nv_fl.nvEncLockInputBuffer(s->session, &li);
	if (st != NV_ENC_SUCCESS) return 600 + st;
	for (int y = 0; y < s->h; y++) {
		const unsigned char *src = px + (size_t)(y < h ? y : h - 1) * stride;
		unsigned char *dst = (unsigned char *)li.bufferDataPtr + (size_t)y * li.pitch;
		if (!rgb) {
			memcpy(dst, src, (size_t)4 * w);
		} else {
			for (int x = 0; x < w; x++) { dst[4*x] = src[4*x+2]; dst[4*x+1] = src[4*x+1]; dst[4*x+2] = src[4*x]; dst[4*x+3] = 255; }
		}
		if (s->w > w) memcpy(dst + 4 * w, dst + 4 * (w - 1), 4);
	}
	nv_fl.nvEncUnlockInputBuffer(s->session, s->in);
	NV_ENC_PIC_PARAMS pp;
	memset(&pp, 0, sizeof(pp));
	pp.version = NV_ENC_PIC_PARAMS_VER;
	pp.inputBuffer = s->in;
	pp.bufferFmt = NV_ENC_BUFFER_FORMAT_ARGB;
	pp.inputWidth = s->w;
	pp.inputHeight = s->h;
	pp.outputBitstream = s->out;
	pp.pictureStruct = NV_ENC_PIC_STRUCT_FRAME;
	pp.inputTimeStamp = s->frames;
	if (s->frames == 0) pp.encodePicFlags = NV_ENC_PIC_FLAG_FORCEIDR | NV_ENC_PIC_FLAG_OUTPUT_SPSPPS;
	if ((st = nv_fl.nvEncEncodePicture(s->session, &pp)) != NV_ENC_SUCCESS) return 700 + st;
	return 0;
}

// nvs_collect waits for the bitstream and copies it to a malloc'ed *out.
static int nvs_collect(nvs_t *s, unsigned char **out, int *len, int *idr) {
	NV_ENC_LOCK_BITSTREAM lb;
	memset(&lb, 0, sizeof(lb));
	lb.version = NV_ENC_LOCK_BITSTREAM_VER;
	lb.outputBitstream = s->out;
	NVENCSTATUS st = nv_fl.nvEncLockBitstream(s->session, &lb);
	if (st != NV_ENC_SUCCESS) return 800 + st;
	*len = lb.bitstreamSizeInBytes;
	*out = malloc(*len > 0 ? *len : 1);
	memcpy(*out, lb.bitstreamBufferPtr, *len);
	*idr = lb.pictureType == NV_ENC_PIC_TYPE_IDR;
	nv_fl.nvEncUnlockBitstream(s->session, s->out);
	s->frames++;
	return 0;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// NVENCProbe is what opening an encode session on a device showed.
type NVENCProbe struct {
	Device     int
	H264, HEVC bool
	MaxAPI     string // highest NVENC API version the driver supports
	Err        string // "": a session opened
}

func (p NVENCProbe) String() string {
	if p.Err != "" {
		return fmt.Sprintf("GPU %d: no NVENC: %s", p.Device, p.Err)
	}
	return fmt.Sprintf("GPU %d: NVENC session opened (API ≤ %s): h264=%v hevc=%v", p.Device, p.MaxAPI, p.H264, p.HEVC)
}

// ProbeNVENC opens (and closes) an NVENC session on a CUDA device. Call
// it only where NVML found the device: without a driver it reports the
// missing library.
func ProbeNVENC(device int) NVENCProbe {
	var h264, hevc C.int
	var maxver C.uint
	why := make([]byte, 256)
	p := NVENCProbe{Device: device}
	if msg := C.nvenc_probe(C.int(device), &h264, &hevc, &maxver, (*C.char)(unsafe.Pointer(&why[0])), C.int(len(why))); msg != nil {
		p.Err = C.GoString(msg)
		return p
	}
	p.H264, p.HEVC = h264 != 0, hevc != 0
	p.MaxAPI = fmt.Sprintf("%d.%d", uint(maxver)>>4, uint(maxver)&0xf)
	return p
}

// NVENC is the H.264 back end for GPUs with an encoder: the NVIDIA Video
// Codec API through dlopen (the binary needs neither the driver nor the
// SDK), one session per window, a batch's pictures all submitted before
// any bitstream is collected. It was built and compiled here but never
// run: no machine with NVENC hardware was available (the lent H100 has
// none; NewNVENC reports that and the proxy falls back).
type NVENC struct {
	DefaultQuality int
}

// NewNVENC checks that an encode session opens on GPU 0.
func NewNVENC() (*NVENC, error) {
	if why := C.nv_init(); why != nil {
		return nil, fmt.Errorf("gpu: nvenc: %s", C.GoString(why))
	}
	if p := ProbeNVENC(0); p.Err != "" || !p.H264 {
		return nil, fmt.Errorf("gpu: nvenc: %s", p)
	}
	return &NVENC{DefaultQuality: 70}, nil
}

func (n *NVENC) Name() string        { return "nvenc (NVIDIA Video Codec API)" }
func (n *NVENC) Encodings() []string { return []string{"h264"} }

type nvencState struct {
	s    *C.nvs_t
	w, h int
}

func (n *NVENC) Close(state any) {
	if st, ok := state.(*nvencState); ok && st.s != nil {
		C.nvs_close(st.s)
		C.free(unsafe.Pointer(st.s))
		st.s = nil
	}
}

func (n *NVENC) Encode(jobs []Job) {
	submitted := make([]*nvencState, len(jobs))
	for i := range jobs {
		f := jobs[i].Frame
		isRGB, err := checkFrame(f)
		if err != nil {
			jobs[i].Out.Err = err
			continue
		}
		rgb := b2i(isRGB)
		st, _ := (*jobs[i].State).(*nvencState)
		if st != nil && (st.w != f.Width || st.h != f.Height) {
			n.Close(st)
			st = nil
		}
		if st == nil {
			q := f.Quality
			if q <= 0 || q > 100 {
				q = n.DefaultQuality
			}
			st = &nvencState{w: f.Width, h: f.Height}
			st.s = (*C.nvs_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.nvs_t{}))))
			if rc := C.nvs_open(st.s, C.int((f.Width+1)&^1), C.int((f.Height+1)&^1), C.int(qp(q))); rc != 0 {
				n.Close(st)
				jobs[i].Out.Err = fmt.Errorf("gpu: nvenc session: error %d", int(rc))
				continue
			}
			*jobs[i].State = st
		}
		if rc := C.nvs_submit(st.s, (*C.uchar)(unsafe.Pointer(&f.Pixels[0])), C.int(f.Width), C.int(f.Height), C.int(f.Stride), C.int(rgb)); rc != 0 {
			jobs[i].Out.Err = fmt.Errorf("gpu: nvenc encode: error %d", int(rc))
			continue
		}
		submitted[i] = st
	}
	for i, st := range submitted {
		if st == nil {
			continue
		}
		frameNo := int64(st.s.frames)
		var out *C.uchar
		var size, idr C.int
		if rc := C.nvs_collect(st.s, &out, &size, &idr); rc != 0 {
			jobs[i].Out.Err = fmt.Errorf("gpu: nvenc bitstream: error %d", int(rc))
			continue
		}
		data := C.GoBytes(unsafe.Pointer(out), size)
		C.free(unsafe.Pointer(out))
		opts := map[string]any{"frame": frameNo, "csc": "YUV420P"}
		if idr != 0 {
			opts["type"] = "IDR"
		}
		if (jobs[i].Frame.Width|jobs[i].Frame.Height)&1 != 0 {
			opts["scaled_size"] = []any{int64((jobs[i].Frame.Width + 1) &^ 1), int64((jobs[i].Frame.Height + 1) &^ 1)}
		}
		jobs[i].Out = Result{Encoding: "h264", Data: data, Options: opts}
	}
}
