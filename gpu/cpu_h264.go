package gpu

/*
#cgo LDFLAGS: -l:libopenh264.a -lstdc++ -lm -lpthread
#include <stdlib.h>
#include <string.h>
#include <wels/codec_api.h>

// One H.264 stream per window: an openh264 encoder in screen-content
// real-time mode, no frame skipping (every frame the server sends must
// reach the client), an IDR only at the start.
typedef struct {
	ISVCEncoder *enc;
	int w, h;            // even dimensions of the stream
	unsigned char *yuv;  // I420 planes
	long frames;
} h264_t;

static int h264_open(h264_t *s, int w, int h, int qp) {
	memset(s, 0, sizeof(*s));
	if (WelsCreateSVCEncoder(&s->enc) || !s->enc) return -1;
	int quiet = WELS_LOG_QUIET;
	(*s->enc)->SetOption(s->enc, ENCODER_OPTION_TRACE_LEVEL, &quiet);
	SEncParamExt p;
	(*s->enc)->GetDefaultParams(s->enc, &p);
	p.iUsageType = SCREEN_CONTENT_REAL_TIME;
	p.iPicWidth = w;
	p.iPicHeight = h;
	p.fMaxFrameRate = 30;
	p.iRCMode = RC_QUALITY_MODE;
	p.iTargetBitrate = w * h * 8;
	p.iMaxBitrate = UNSPECIFIED_BIT_RATE;
	p.iMinQp = qp > 8 ? qp - 8 : 0;
	p.iMaxQp = qp;
	p.bEnableFrameSkip = false;
	p.bEnableAdaptiveQuant = false; // not supported for screen content
	p.uiIntraPeriod = 0;
	p.iMultipleThreadIdc = 1;
	p.iSpatialLayerNum = 1;
	p.sSpatialLayers[0].iVideoWidth = w;
	p.sSpatialLayers[0].iVideoHeight = h;
	p.sSpatialLayers[0].fFrameRate = 30;
	p.sSpatialLayers[0].iSpatialBitrate = p.iTargetBitrate;
	p.sSpatialLayers[0].iMaxSpatialBitrate = UNSPECIFIED_BIT_RATE;
	p.sSpatialLayers[0].sSliceArgument.uiSliceMode = SM_SINGLE_SLICE;
	if ((*s->enc)->InitializeExt(s->enc, &p)) return -2;
	int fmt = videoFormatI420;
	(*s->enc)->SetOption(s->enc, ENCODER_OPTION_DATAFORMAT, &fmt);
	s->w = w;
	s->h = h;
	s->yuv = malloc((size_t)w * h * 3 / 2);
	return s->yuv ? 0 : -3;
}

static void h264_close(h264_t *s) {
	if (s->enc) {
		(*s->enc)->Uninitialize(s->enc);
		WelsDestroySVCEncoder(s->enc);
	}
	free(s->yuv);
	memset(s, 0, sizeof(*s));
}

// to_i420 converts 4-byte pixels (BGR or RGB order) to I420 (BT.601,
// limited range), padding odd edges by repeating the last row/column.
static void to_i420(h264_t *s, const unsigned char *px, int w, int h, int stride, int rgb) {
	int W = s->w, H = s->h;
	unsigned char *Y = s->yuv, *U = Y + W * H, *V = U + (W / 2) * (H / 2);
	int ri = rgb ? 0 : 2, bi = rgb ? 2 : 0;
	for (int y = 0; y < H; y++) {
		const unsigned char *row = px + (size_t)(y < h ? y : h - 1) * stride;
		for (int x = 0; x < W; x++) {
			const unsigned char *p = row + 4 * (x < w ? x : w - 1);
			int r = p[ri], g = p[1], b = p[bi];
			Y[y * W + x] = (unsigned char)(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16);
			if (!(y & 1) && !(x & 1)) {
				U[(y / 2) * (W / 2) + x / 2] = (unsigned char)(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128);
				V[(y / 2) * (W / 2) + x / 2] = (unsigned char)(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128);
			}
		}
	}
}

// h264_encode encodes one frame; the Annex-B bitstream is copied to *out
// (malloc'ed; the caller frees it). *idr reports a key frame.
static int h264_encode(h264_t *s, const unsigned char *px, int w, int h, int stride, int rgb,
		unsigned char **out, int *len, int *idr) {
	to_i420(s, px, w, h, stride, rgb);
	SSourcePicture pic;
	memset(&pic, 0, sizeof(pic));
	pic.iPicWidth = s->w;
	pic.iPicHeight = s->h;
	pic.iColorFormat = videoFormatI420;
	pic.iStride[0] = s->w;
	pic.iStride[1] = pic.iStride[2] = s->w / 2;
	pic.pData[0] = s->yuv;
	pic.pData[1] = s->yuv + s->w * s->h;
	pic.pData[2] = pic.pData[1] + (s->w / 2) * (s->h / 2);
	pic.uiTimeStamp = s->frames * 33;
	SFrameBSInfo info;
	memset(&info, 0, sizeof(info));
	int rc = (*s->enc)->EncodeFrame(s->enc, &pic, &info);
	if (rc) return rc;
	int total = 0;
	for (int i = 0; i < info.iLayerNum; i++)
		for (int j = 0; j < info.sLayerInfo[i].iNalCount; j++)
			total += info.sLayerInfo[i].pNalLengthInByte[j];
	*out = malloc(total > 0 ? total : 1);
	int off = 0;
	for (int i = 0; i < info.iLayerNum; i++) {
		int n = 0;
		for (int j = 0; j < info.sLayerInfo[i].iNalCount; j++) n += info.sLayerInfo[i].pNalLengthInByte[j];
		memcpy(*out + off, info.sLayerInfo[i].pBsBuf, n);
		off += n;
	}
	*len = total;
	*idr = info.eFrameType == videoFrameTypeIDR;
	s->frames++;
	return 0;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// CPUH264 is the H.264 back end that always works: openh264 (BSD-2, linked
// statically) on the CPU, one encoder per window. Frames of a batch are
// encoded one after the other; the pool's workers give the parallelism.
type CPUH264 struct {
	DefaultQuality int
}

// NewCPUH264 makes the back end.
func NewCPUH264() *CPUH264 { return &CPUH264{DefaultQuality: 70} }

func (c *CPUH264) Name() string        { return "cpu-h264 (openh264)" }
func (c *CPUH264) Encodings() []string { return []string{"h264"} }

type h264State struct {
	s    *C.h264_t // C memory: the encoder keeps pointers into it
	w, h int       // frame size it was opened for
	q    int
}

// Close frees a window's encoder.
func (c *CPUH264) Close(state any) {
	if st, ok := state.(*h264State); ok && st.s != nil {
		C.h264_close(st.s)
		C.free(unsafe.Pointer(st.s))
		st.s = nil
	}
}

// qp maps xpra's quality (1-100) to the highest quantiser allowed.
func qp(quality int) int { return max(10, min(51, 51-quality*2/5)) }

func (c *CPUH264) Encode(jobs []Job) {
	for i := range jobs {
		jobs[i].Out = c.one(jobs[i].Frame, jobs[i].State)
	}
}

func (c *CPUH264) one(f *Frame, state *any) Result {
	isRGB, err := checkFrame(f)
	if err != nil {
		return Result{Err: err}
	}
	rgb := b2i(isRGB)
	q := f.Quality
	if q <= 0 || q > 100 {
		q = c.DefaultQuality
	}
	st, _ := (*state).(*h264State)
	// A new size (or a new window) starts a new stream, as xpra recreates
	// its video encoders on resize.
	if st != nil && (st.w != f.Width || st.h != f.Height) {
		c.Close(st)
		st = nil
	}
	if st == nil {
		st = &h264State{w: f.Width, h: f.Height, q: q}
		st.s = (*C.h264_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.h264_t{}))))
		if rc := C.h264_open(st.s, C.int((f.Width+1)&^1), C.int((f.Height+1)&^1), C.int(qp(q))); rc != 0 {
			c.Close(st)
			return Result{Err: fmt.Errorf("gpu: openh264 init: %d", int(rc))}
		}
		*state = st
	}
	var out *C.uchar
	var n, idr C.int
	frameNo := int64(st.s.frames)
	if rc := C.h264_encode(st.s, (*C.uchar)(unsafe.Pointer(&f.Pixels[0])), C.int(f.Width), C.int(f.Height),
		C.int(f.Stride), C.int(rgb), &out, &n, &idr); rc != 0 {
		return Result{Err: fmt.Errorf("gpu: openh264 encode: %d", int(rc))}
	}
	data := C.GoBytes(unsafe.Pointer(out), n)
	C.free(unsafe.Pointer(out))
	opts := map[string]any{"frame": frameNo, "csc": "YUV420P", "quality": q}
	if idr != 0 {
		opts["type"] = "IDR"
	}
	if (f.Width|f.Height)&1 != 0 {
		// The stream is the even size; the client crops to the draw's.
		opts["scaled_size"] = []any{int64((f.Width + 1) &^ 1), int64((f.Height + 1) &^ 1)}
	}
	return Result{Encoding: "h264", Data: data, Options: opts}
}
