package gpu

import "fmt"

// Available lists the back ends that work on this machine, best first:
// GPU ones only when their libraries load and a device answers.
func Available() []Backend {
	var out []Backend
	if nv, err := NewNVENC(); err == nil {
		out = append(out, nv)
	}
	if nj, err := NewNVJPEG(); err == nil {
		out = append(out, nj)
	}
	return append(out, NewCPUH264(), NewCPUJPEG())
}

// VideoEncodings are what xpra servers hand to a proxy encoder: only
// video encodings go through their video pipeline (jpeg never does).
var VideoEncodings = []string{"h264", "h265"}

func isVideo(b Backend) bool {
	for _, e := range b.Encodings() {
		for _, v := range VideoEncodings {
			if e == v {
				return true
			}
		}
	}
	return false
}

// Choose picks the back end: name "" or "auto" takes the best available
// (NVENC when a GPU has encoder capacity, which the H100 and H200 do not;
// then nvJPEG; then the CPU), else the one named.
func Choose(name string, d Discovery) (Backend, string, error) {
	why := d.String()
	if len(d.NVENC()) == 0 && d.Err == "" {
		why += "\nno GPU with NVENC: no encode session could be opened (NVML's capacity figure is not trusted)"
	}
	switch name {
	case "", "auto":
		if len(d.NVENC()) > 0 {
			if nv, err := NewNVENC(); err == nil {
				return nv, why + "\nchosen: nvenc", nil
			} else {
				why += "\nnvenc unusable: " + err.Error()
			}
		}
		// nvJPEG makes jpeg, which xpra servers never hand to a proxy
		// encoder: without NVENC there is no GPU back end for proxy video.
		return NewCPUH264(), why + "\nchosen: cpu-h264 (no GPU video encoder)", nil
	case "cpu", "cpu-h264":
		return NewCPUH264(), why + "\nchosen: cpu-h264 (forced)", nil
	case "cpu-jpeg":
		return NewCPUJPEG(), why + "\nchosen: cpu-jpeg (forced)", nil
	case "nvjpeg":
		nj, err := NewNVJPEG()
		if err != nil {
			return nil, why, err
		}
		return nj, why + "\nchosen: nvjpeg (forced)", nil
	case "nvenc":
		if len(d.NVENC()) == 0 {
			return nil, why, fmt.Errorf("gpu: nvenc requested but no GPU has an encoder")
		}
		nv, err := NewNVENC()
		if err != nil {
			return nil, why, err
		}
		return nv, why + "\nchosen: nvenc (forced)", nil
	}
	return nil, why, fmt.Errorf("gpu: unknown back end %q (auto, nvenc, nvjpeg, cpu, cpu-jpeg)", name)
}

// StartPool starts the proxy-video pool for --proxy-video-encoders: none
// gives no pool; auto uses a GPU back end when there is one and otherwise
// none (the proxy's CPU is for relaying; servers compress as usual); cpu,
// nvjpeg and nvenc force one. why says what discovery found.
func StartPool(name string) (*Pool, string, error) {
	if name == "" || name == "none" {
		return nil, "--proxy-video-encoders=none", nil
	}
	b, why, err := Choose(name, Discover())
	if err != nil {
		return nil, why, err
	}
	if !isVideo(b) {
		return nil, why, fmt.Errorf("gpu: %s makes %v; xpra servers hand only video encodings (%v) to a proxy encoder",
			b.Name(), b.Encodings(), VideoEncodings)
	}
	if _, cpu := b.(*CPUH264); cpu && name == "auto" {
		return nil, why + "\nno GPU video encoder: servers compress their own updates (--proxy-video-encoders=cpu forces openh264 here)", nil
	}
	return NewPool(b, PoolConfig{}), why, nil
}
