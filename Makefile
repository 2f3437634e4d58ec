# `make run` starts the proxy on its embedded default (README). As root it
# runs as nobody: xpraproxy never relays as root.
.PHONY: build run test
build:
	go build -o bin/xpraproxy ./cmd/xpraproxy

run: build
	@if [ "$$(id -u)" = 0 ]; then \
		install -d -o nobody -g nogroup -m 700 /tmp/xpraproxy-nobody; \
		echo "running as nobody (HOME=/tmp/xpraproxy-nobody)"; \
		HOME=/tmp/xpraproxy-nobody XDG_CONFIG_HOME=/tmp/xpraproxy-nobody/.config \
			setpriv --reuid=nobody --regid=nogroup --clear-groups bin/xpraproxy proxy $(ARGS); \
	else \
		bin/xpraproxy proxy $(ARGS); \
	fi

test:
	./test.sh
