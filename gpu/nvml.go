// Package gpu re-encodes screen updates at the proxy: NVML discovery,
// the batched encoder pool and its back ends (docs/gpu.md).
package gpu

import (
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Device is one GPU as NVML describes it.
type Device struct {
	Index          int
	Name           string
	UUID           string
	MemoryTotal    uint64
	GPUUtil        uint32 // percent
	EncoderUtil    uint32 // percent
	EncoderCapH264 int    // NVENC capacity (0: no NVENC for the codec)
	EncoderCapHEVC int
	EncoderCapAV1  int
	EncoderSess    int // active encoder sessions
	// Probe is the result of opening an NVENC session: NVML's capacity
	// alone is not proof (an H100 reports 100 % and has no encoder).
	Probe NVENCProbe
}

// HasNVENC reports whether an encode session opened and offers H.264 or
// HEVC.
func (d Device) HasNVENC() bool {
	return d.Probe.Err == "" && (d.Probe.H264 || d.Probe.HEVC)
}

// Discovery is what Discover found: the devices, or why there are none.
type Discovery struct {
	Driver  string
	Devices []Device
	Err     string // "": NVML worked
}

// NVENC reports the devices with an encoder.
func (d Discovery) NVENC() []Device {
	var out []Device
	for _, dev := range d.Devices {
		if dev.HasNVENC() {
			out = append(out, dev)
		}
	}
	return out
}

func (d Discovery) String() string {
	if d.Err != "" {
		return "no NVML: " + d.Err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "NVML: driver %s, %d GPU(s)\n", d.Driver, len(d.Devices))
	for _, dev := range d.Devices {
		fmt.Fprintf(&b, "  GPU %d: %s (%s), %d MiB, utilisation %d %%, encoder %d %%, NVML encoder capacity h264=%d hevc=%d av1=%d, %d encoder sessions\n    %s\n",
			dev.Index, dev.Name, dev.UUID, dev.MemoryTotal>>20, dev.GPUUtil, dev.EncoderUtil,
			dev.EncoderCapH264, dev.EncoderCapHEVC, dev.EncoderCapAV1, dev.EncoderSess, dev.Probe)
	}
	return strings.TrimRight(b.String(), "\n")
}

// Discover asks NVML about the GPUs. A missing library or driver is a
// normal outcome, reported in Err; after a failed Init nothing else of
// NVML is called (it would abort the process).
func Discover() (d Discovery) {
	defer func() {
		// go-nvml panics when the library cannot be loaded at all.
		if r := recover(); r != nil {
			d = Discovery{Err: fmt.Sprint(r)}
		}
	}()
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		return Discovery{Err: "init: " + nvml.ErrorString(ret)}
	}
	defer nvml.Shutdown()
	d.Driver, _ = nvml.SystemGetDriverVersion()
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		d.Err = "device count: " + nvml.ErrorString(ret)
		return d
	}
	for i := 0; i < n; i++ {
		h, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		dev := Device{Index: i}
		dev.Name, _ = h.GetName()
		dev.UUID, _ = h.GetUUID()
		if m, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
			dev.MemoryTotal = m.Total
		}
		if u, ret := h.GetUtilizationRates(); ret == nvml.SUCCESS {
			dev.GPUUtil = u.Gpu
		}
		if u, _, ret := h.GetEncoderUtilization(); ret == nvml.SUCCESS {
			dev.EncoderUtil = u
		}
		// NOT_SUPPORTED is how a GPU without NVENC answers.
		if c, ret := h.GetEncoderCapacity(nvml.ENCODER_QUERY_H264); ret == nvml.SUCCESS {
			dev.EncoderCapH264 = c
		}
		if c, ret := h.GetEncoderCapacity(nvml.ENCODER_QUERY_HEVC); ret == nvml.SUCCESS {
			dev.EncoderCapHEVC = c
		}
		if c, ret := h.GetEncoderCapacity(nvml.ENCODER_QUERY_AV1); ret == nvml.SUCCESS {
			dev.EncoderCapAV1 = c
		}
		if s, _, _, ret := h.GetEncoderStats(); ret == nvml.SUCCESS {
			dev.EncoderSess = s
		}
		// CUDA numbers devices in the same (PCI bus) order when
		// CUDA_DEVICE_ORDER=PCI_BUS_ID; the proxy sets nothing else.
		dev.Probe = ProbeNVENC(i)
		d.Devices = append(d.Devices, dev)
	}
	return d
}
