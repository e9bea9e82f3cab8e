#!/usr/bin/env bash
# Installs everything poncho_wq's demo and tests need on a fresh Debian machine; safe to run again (idempotent).
#   bash dev/setup.sh          # Debian packages + pip install -e .[test]
# Prints nothing but progress on stderr. Run as root (or with sudo available) on Debian/Ubuntu.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}

sudo_=""
[ "$(id -u)" = 0 ] || sudo_="sudo"
need=""
command -v work_queue_worker >/dev/null 2>&1 || need="$need coop-computing-tools python3-workqueue"
# curl: what workers fetch url-mode environments with; debootstrap: the Debian 11 root of tests/test_old_glibc.py
for p in pigz busybox dash git tar gzip python3-yaml curl debootstrap; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  echo "dev/setup.sh: installing Debian packages:$need" >&2
  $sudo_ apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq $need >&2
fi

# pip install -e is the slow part; skip it when this checkout is already installed in editable mode and
# setup.cfg/the shim did not change since (the stamp stores their hash).
stamp="$top/.dev-installed"
# The stamp is per checkout, and the installed package must be this checkout's: a second clone (CI's, a
# colleague's) installing itself in editable mode takes the same interpreter's poncho_wq over.
want=$(cat "$top/setup.cfg" "$top/poncho_wq/data/poncho_package_run" | sha256sum | cut -c1-64)-$("$PYTHON" -c 'import sys; print(sys.prefix)')-$top
have=$(cd / && "$PYTHON" -c 'import os, poncho_wq; print(os.path.dirname(os.path.dirname(os.path.realpath(poncho_wq.__file__))))' 2>/dev/null || :)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ "$have" != "$(cd "$top" && pwd -P)" ]; then
  echo "dev/setup.sh: pip install -e .[test]" >&2
  "$PYTHON" -m pip install -q -e "$top[test]" >&2
  echo "$want" > "$stamp"
fi
