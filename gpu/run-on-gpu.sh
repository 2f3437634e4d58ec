#!/bin/bash
# Everything gpu/ can show on a GPU machine, in one run (issue 7): NVML
# discovery, the back-end decision, the nvJPEG test, and the encode and
# pool benchmarks for every back end present. Run from the repository
# root. Without Go on the GPU machine, build first where Go is:
#   go test -c -o bin/gpu.test ./gpu && go build -o bin/xpraproxy ./cmd/xpraproxy
# and copy bin/ along (the binaries need only glibc: NVML, CUDA and
# nvJPEG are loaded at run time, libjpeg-turbo is linked statically).
set -u
if command -v go >/dev/null; then
  go test -c -o bin/gpu.test ./gpu && go build -o bin/xpraproxy ./cmd/xpraproxy || exit 1
fi
echo "== machine"; nvidia-smi -L 2>&1; nproc
echo "== xpraproxy gpu (NVML discovery and the back end chosen)"
bin/xpraproxy gpu
echo "== xpraproxy gpu nvenc (forced)"
bin/xpraproxy gpu nvenc
echo "== tests (nvJPEG output decoded and checked)"
bin/gpu.test -test.run 'Discover|NVJPEG|CPUJPEG|Pool' -test.v 2>&1 | grep -E '^(=== RUN|--- |\s+\S+_test.go|PASS|FAIL|ok)'
echo "== benchmarks"
bin/gpu.test -test.run '^$' -test.bench . -test.benchtime "${BENCHTIME:-2s}" 2>&1 | grep -E '^(Benchmark|goos|cpu|PASS|FAIL)'
