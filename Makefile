# `make run` starts the proxy on its embedded default (README). As root,
# each connection is relayed by a worker running as the target account
# (nobody by default): no relay runs as root.
.PHONY: build run test deps install install-files

# `make install` (as root, or with DESTDIR=stage for a package): the
# binary, the systemd units and, unless one is there already, the example
# configuration and /etc/default file (docs/service.md).
PREFIX ?= /usr
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= /lib/systemd/system
BIN ?= bin/xpraproxy

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

install: build install-files

# install-files installs $(BIN) as it is (the tests install a binary they
# built); the units' /usr/bin/xpraproxy becomes $(PREFIX)/bin/xpraproxy.
install-files:
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/xpraproxy
	install -d $(DESTDIR)$(SYSTEMDUNITDIR)
	for u in xpraproxy.service xpraproxy.socket; do \
		sed 's|/usr/bin/xpraproxy|$(PREFIX)/bin/xpraproxy|g' packaging/$$u > $(DESTDIR)$(SYSTEMDUNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
	done
	install -d $(DESTDIR)$(SYSCONFDIR)/xpraproxy/conf.d $(DESTDIR)$(SYSCONFDIR)/default
	@# An operator's configuration is never overwritten.
	[ -e $(DESTDIR)$(SYSCONFDIR)/xpraproxy/xpraproxy.conf ] || \
		install -m 0644 packaging/xpraproxy.conf $(DESTDIR)$(SYSCONFDIR)/xpraproxy/xpraproxy.conf
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/xpraproxy ] || \
		install -m 0644 packaging/default $(DESTDIR)$(SYSCONFDIR)/default/xpraproxy
