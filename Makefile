# `make run` starts the proxy on its embedded default (README). As root,
# each connection is relayed by a worker running as the target account
# (nobody by default): no relay runs as root.
.PHONY: build run test deps

# C libraries the build links (cgo): PAM, openh264 and libjpeg-turbo
# (static), and the NVENC API headers (the library itself is dlopened).
BUILD_DEPS := libpam0g-dev libopenh264-dev libturbojpeg0-dev libffmpeg-nvenc-dev

deps:
	@missing=""; for p in $(BUILD_DEPS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" -ne 0 ] && sudo="sudo"; \
		echo "installing build dependencies:$$missing"; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -o bin/xpraproxy ./cmd/xpraproxy

run: build
	bin/xpraproxy proxy $(ARGS)

test:
	./test.sh
