#!/usr/bin/env bash
# Builds xpra 6.x from PyPI's source distribution into a cache outside the
# repository, once per version, and writes a wrapper that keeps it apart
# from Debian's xpra 3.1.3 (its config, sockets, X cookies and dbus):
#
#   interop/xpra6.sh            # prints the wrapper's path when it is ready
#   "$(interop/xpra6.sh)" version
#
# XPRA6_VERSION picks the version (default below), XPRA6_CACHE the cache
# (default /var/cache/xpraproxy). What the build needs and why each
# setting is there: ../shared/INTEROP.md ("xpra 6.x beside 3.1.3"). Never
# install with --root=/: 6.x's files would replace Debian's 3.1.3 ones.
set -euo pipefail
version="${XPRA6_VERSION:-6.5.5}"
cache="${XPRA6_CACHE:-/var/cache/xpraproxy}"
prefix="$cache/xpra-$version"
wrapper="$prefix/xpra6"
# Python modules xpra imports at run time that Debian 12 lacks, from PyPI
# into a directory of their own on the wrapper's PYTHONPATH: aioquic for
# quic:// (xpra/net/quic; Debian has no python3-aioquic).
extras="$prefix/extras"
aioquic_version=1.7.2
py=/usr/bin/python3 # Debian's: it has the GTK bindings
log() { echo "xpra6.sh: $*" >&2; }
# ensure_extras installs them unless they import (a cache made before they
# were listed gets them too).
ensure_extras() {
  if PYTHONPATH="$extras" "$py" -c "import aioquic, sys; sys.exit(aioquic.__version__ != '$aioquic_version')" 2>/dev/null; then
    return 0
  fi
  log "installing aioquic $aioquic_version into $extras"
  rm -rf "$extras.tmp"
  "$py" -m pip install --quiet --disable-pip-version-check --target="$extras.tmp" "aioquic==$aioquic_version" >&2
  rm -rf "$extras" && mv "$extras.tmp" "$extras"
}
# write_wrapper makes the wrapper: 6.x's modules, config and runtime
# files, never Debian's. Written beside it and renamed: tests running
# the old one are undisturbed.
write_wrapper() {
  local site="$1" script="$2"
  cat >"$wrapper.tmp" <<WRAP
#!/bin/sh
# xpra $version from PyPI, built by interop/xpra6.sh; kept apart from Debian's xpra.
export PYTHONPATH="$prefix/${site#./}:$extras\${PYTHONPATH:+:\$PYTHONPATH}"
export XPRA_SYSTEM_CONF_DIRS="$prefix/etc/xpra" XPRA_USER_CONF_DIRS="$prefix/userconf"
export XPRA_SYSTEM_DBUS=0 XPRA_PRIVATE_XAUTH=1
exec /usr/bin/python3 "$prefix/${script#./}" "\$@"
WRAP
  chmod 755 "$wrapper.tmp"
  mv "$wrapper.tmp" "$wrapper"
}
if [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
  ensure_extras
  if ! grep -q "$extras" "$wrapper"; then
    site="$(cd "$prefix" && find . -type d -name dist-packages -path '*python3*' -not -path './extras*' | head -1)"
    script="$(cd "$prefix" && find . -type f -path '*/bin/xpra' | head -1)"
    write_wrapper "$site" "$script"
  fi
  echo "$wrapper"
  exit 0
fi

deps=(build-essential pkg-config python3-dev python3-gi python3-pip gir1.2-gtk-3.0 libgtk-3-dev libxdamage-dev
  libxtst-dev libxkbfile-dev libxres-dev libxrandr-dev libsystemd-dev liblz4-dev libxxhash-dev python3-cairo-dev
  python-gi-dev libvpx-dev libx264-dev libwebp-dev libxpresent-dev libproc2-dev libqrencode-dev libdrm-dev
  python3-psutil python3-netifaces libturbojpeg0-dev libopenh264-dev)
"$(dirname "$0")/ensure-packages.sh" "${deps[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "building xpra $version in $work (1.5 to 6 minutes on 2 cores)"
# Cython >= 3 (bookworm's is 0.29), for the build only.
"$py" -m pip install --quiet --disable-pip-version-check --target="$work/tools" "cython>=3,<4" >&2
export PATH="$work/tools/bin:$PATH" PYTHONPATH="$work/tools"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-binary :all: \
  "xpra==$version" -d "$work" >&2
tar -xzf "$work/xpra-$version.tar.gz" -C "$work"
cd "$work/xpra-$version"
flags=(--without-docs --without-nvidia --without-evdi --without-cuda_kernels --without-printing --without-webcam
  --without-v4l2 --without-example)
"$py" setup.py build_ext -j "$(nproc)" "${flags[@]}" >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
rm -rf "$prefix.tmp"
mkdir -p "$prefix.tmp"
"$py" setup.py install --prefix="$prefix.tmp" --single-version-externally-managed --record="$work/files.txt" \
  "${flags[@]}" >>"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
# Debian's install scheme puts them under local/.
site="$(cd "$prefix.tmp" && find . -type d -name dist-packages -path '*python3*' | head -1)"
script="$(cd "$prefix.tmp" && find . -type f -path '*/bin/xpra' | head -1)"
[ -n "$site" ] && [ -n "$script" ] || { log "no dist-packages or bin/xpra under $prefix.tmp"; exit 1; }
rm -rf "$prefix" && mv "$prefix.tmp" "$prefix"

# The wrapper: 6.x's modules, config and runtime files, never Debian's.
mkdir -p "$prefix/userconf"
cat >"$prefix/userconf/xpra.conf" <<CONF
dbus-launch = no
dbus-control = no
dbus = no
mdns = no
printing = no
audio = no
webcam = no
notifications = no
systemd-run = no
pulseaudio = no
CONF
ensure_extras
write_wrapper "$site" "$script"
"$wrapper" --version >&2
echo "$wrapper"
