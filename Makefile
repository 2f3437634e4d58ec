# `make run` starts the proxy on its embedded default (README). As root,
# each connection is relayed by a worker running as the target account
# (nobody by default): no relay runs as root.
.PHONY: build run test
build:
	go build -o bin/xpraproxy ./cmd/xpraproxy

run: build
	bin/xpraproxy proxy $(ARGS)

test:
	./test.sh
