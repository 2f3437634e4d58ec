package main

import (
	"fmt"
	"io"

	"github.com/xpraproxy/xpraproxy/gpu"
)

// gpuMain is `xpraproxy gpu [BACKEND]`: what NVML sees and which
// re-encoding back end the proxy would use.
func gpuMain(args []string, stdout, stderr io.Writer) int {
	name := "auto"
	if len(args) > 0 {
		name = args[0]
	}
	d := gpu.Discover()
	b, why, err := gpu.Choose(name, d)
	fmt.Fprintln(stdout, why)
	if err != nil {
		fmt.Fprintln(stderr, "xpraproxy gpu:", err)
		return 1
	}
	fmt.Fprintf(stdout, "encodings: %v\n", b.Encodings())
	return 0
}
