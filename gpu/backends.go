package gpu

import "fmt"

// Available lists the back ends that work on this machine, best first:
// GPU ones only when their libraries load and a device answers.
func Available() []Backend {
	var out []Backend
	if nj, err := NewNVJPEG(); err == nil {
		out = append(out, nj)
	}
	return append(out, NewCPUJPEG())
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
		for _, b := range Available() {
			return b, why + "\nchosen: " + b.Name(), nil
		}
	case "cpu", "cpu-jpeg":
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
		return nil, why, fmt.Errorf("gpu: an NVENC session opens, but the NVENC encoding back end is not built (no NVENC hardware was available to test it)")
	}
	return nil, why, fmt.Errorf("gpu: unknown back end %q (auto, nvenc, nvjpeg, cpu)", name)
}
