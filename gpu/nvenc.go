package gpu

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
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

// nvenc_probe fills h264/hevc for device ord; returns NULL, or why not
// (written into why).
static const char *nvenc_probe(int ord, int *h264, int *hevc, unsigned *maxver, char *why, int whylen) {
	*h264 = *hevc = 0;
	void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!cu) return "libcuda.so.1 not found";
	void *enc = dlopen("libnvidia-encode.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!enc) return "libnvidia-encode.so.1 not found";
	tcuInit *cuInit = (tcuInit *)dlsym(cu, "cuInit");
	tcuDeviceGet *cuDeviceGet = (tcuDeviceGet *)dlsym(cu, "cuDeviceGet");
	tcuCtxCreate_v2 *cuCtxCreate = (tcuCtxCreate_v2 *)dlsym(cu, "cuCtxCreate_v2");
	tcuCtxDestroy_v2 *cuCtxDestroy = (tcuCtxDestroy_v2 *)dlsym(cu, "cuCtxDestroy_v2");
	tCreateInstance create = (tCreateInstance)dlsym(enc, "NvEncodeAPICreateInstance");
	tMaxVersion maxv = (tMaxVersion)dlsym(enc, "NvEncodeAPIGetMaxSupportedVersion");
	if (!cuInit || !cuDeviceGet || !cuCtxCreate || !cuCtxDestroy || !create || !maxv) return "missing CUDA or NVENC symbols";
	if (maxv(maxver) != NV_ENC_SUCCESS) return "NvEncodeAPIGetMaxSupportedVersion failed";
	CUdevice dev;
	CUcontext ctx;
	if (cuInit(0) != 0 || cuDeviceGet(&dev, ord) != 0) return "no CUDA device";
	if (cuCtxCreate(&ctx, 0, dev) != 0) return "cannot create a CUDA context";
	NV_ENCODE_API_FUNCTION_LIST fl;
	memset(&fl, 0, sizeof(fl));
	fl.version = NV_ENCODE_API_FUNCTION_LIST_VER;
	const char *res = NULL;
	if (create(&fl) != NV_ENC_SUCCESS || !fl.nvEncOpenEncodeSessionEx) {
		res = "NvEncodeAPICreateInstance failed";
		goto out;
	}
	NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS p;
	memset(&p, 0, sizeof(p));
	p.version = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER;
	p.deviceType = NV_ENC_DEVICE_TYPE_CUDA;
	p.device = ctx;
	p.apiVersion = NVENCAPI_VERSION;
	void *session = NULL;
	NVENCSTATUS st = fl.nvEncOpenEncodeSessionEx(&p, &session);
	if (st != NV_ENC_SUCCESS) {
		snprintf(why, whylen, "nvEncOpenEncodeSessionEx: NVENCSTATUS %d (%s)", (int)st,
			st == NV_ENC_ERR_NO_ENCODE_DEVICE ? "no encode device" :
			st == NV_ENC_ERR_UNSUPPORTED_DEVICE ? "unsupported device" :
			st == NV_ENC_ERR_OUT_OF_MEMORY ? "out of memory or sessions" : "see nvEncodeAPI.h");
		res = why;
		goto out;
	}
	uint32_t n = 0;
	if (fl.nvEncGetEncodeGUIDCount(session, &n) == NV_ENC_SUCCESS && n > 0 && n < 32) {
		GUID guids[32];
		uint32_t got = 0;
		if (fl.nvEncGetEncodeGUIDs(session, guids, n, &got) == NV_ENC_SUCCESS) {
			for (uint32_t i = 0; i < got; i++) {
				if (same_guid(guids[i], NV_ENC_CODEC_H264_GUID)) *h264 = 1;
				if (same_guid(guids[i], NV_ENC_CODEC_HEVC_GUID)) *hevc = 1;
			}
		}
	}
	fl.nvEncDestroyEncoder(session);
out:
	cuCtxDestroy(ctx);
	return res;
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
