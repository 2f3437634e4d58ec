package gpu

import (
	"strings"
	"testing"
)

// Without a driver (this machine, CI) discovery reports why and does not
// crash; with one (the GPU script), it lists the devices.
func TestDiscoverWithoutDriverIsNormal(t *testing.T) {
	d := Discover()
	t.Log(d.String())
	if d.Err == "" && len(d.Devices) == 0 {
		t.Fatal("NVML worked but found no device and gave no reason")
	}
	if d.Err != "" && (!strings.HasPrefix(d.String(), "no NVML: ") || len(d.NVENC()) != 0) {
		t.Fatalf("failed discovery: %q %v", d.String(), d.NVENC())
	}
	// A second call after a failure must not abort the process.
	_ = Discover()
}
