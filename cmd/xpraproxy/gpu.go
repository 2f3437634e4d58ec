package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/xpraproxy/xpraproxy/gpu"
)

// videoPool starts the pool --proxy-video-encoders asks for.
func videoPool(name string, log *slog.Logger) (*gpu.Pool, error) {
	pool, why, err := gpu.StartPool(name)
	if err != nil {
		return nil, fmt.Errorf("--proxy-video-encoders=%s: %w", name, err)
	}
	if pool == nil {
		log.Info("proxy video off", "why", why)
	} else {
		log.Info("proxy video on", "backend", pool.Backend().Name(), "discovery", why)
	}
	return pool, nil
}

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
