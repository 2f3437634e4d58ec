#!/bin/sh
# Writes xpraoptions.txt: the keys xpra's configuration files may hold
# (OPTION_TYPES in xpra/scripts/config.py) in the installed xpra 3.1.3
# (Debian's package) and 6.x (interop/xpra6.sh's build). The names are read
# from the installed modules at generation time; none of xpra's code is
# copied. The proxy lists these keys as ignored when a conf file has them
# (docs/config.md), and TestXpraOptionsData checks the file is current.
#
#   go generate ./cmd/xpraproxy
#   sh gen_xpraoptions.sh OUT     # write OUT instead (the test does)
#
# XPRAPROXY_XPRA6 names the 6.x wrapper (default: what interop/xpra6.sh
# prints, building it once if needed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3 # Debian's: xpra 3.1.3 is installed for it
six=${XPRAPROXY_XPRA6:-$("$here/../../interop/xpra6.sh")}
site6=$(echo "$(dirname "$six")"/local/lib/python3*/dist-packages)
list='import xpra
from xpra.scripts.config import OPTION_TYPES
for k in sorted(OPTION_TYPES): print(k, xpra.__version__)'
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# -I: Debian's modules only, whatever PYTHONPATH says; 6.x's by its path.
"$py" -I -c "$list" >"$tmp"
PYTHONPATH="$site6" "$py" -s -c "$list" >>"$tmp"
v3=$("$py" -I -c 'import xpra; print(xpra.__version__)')
v6=$(PYTHONPATH="$site6" "$py" -s -c 'import xpra; print(xpra.__version__)')
{
  echo "# xpra's configuration file keys (OPTION_TYPES) and the versions that have them,"
  echo "# made by gen_xpraoptions.sh from the installed xpra $v3 and xpra $v6. Do not edit."
  LC_ALL=C sort -k1,1 -k2,2V "$tmp" | awk '
    $1 != k { if (k != "") print k "\t" v; k = $1; v = $2; next }
    { v = v " " $2 }
    END { if (k != "") print k "\t" v }'
} >"${1:-$here/xpraoptions.txt}"
