#!/usr/bin/env bash
# Installs what poncho_wq's demo or test suite needs on a Debian machine; safe to run again (idempotent).
#   bash dev/setup.sh [demo|test]     # default: test; prints the virtual environment's python on stdout
#
# Two parts, said in one line on stderr before anything is installed:
# 1. Debian packages (needs root, or sudo without a password): Work Queue (`coop-computing-tools
#    python3-workqueue`: work_queue_worker, Debian's `work_queue` binding for /usr/bin/python3), the shells, tars and
#    curl the worker shim is tested with; for the tests also debootstrap and the toolchain that
#    ../shared/tools/build-cctools compiles current CCTools with. Nothing is installed when all are present; a user
#    without root gets the one apt-get line to ask an administrator for, and exit 1.
# 2. The Python side, never as root-owned system state: a virtual environment of this checkout (.venv, made by the
#    machine's python3, *without* --system-site-packages) holding `pip install -e .[test]`, i.e. setup.cfg's declared
#    dependencies and nothing else. It is made again from scratch whenever setup.cfg changes, so a dependency that is
#    used but not declared fails here exactly as on a fresh machine. Each clone has its own: two clones never take
#    each other's editable install over.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd -P)
purpose=${1:-test}
PYTHON=${PYTHON:-python3}
venv="$top/.venv"

apt_want="coop-computing-tools python3-workqueue pigz busybox dash git tar gzip python3-yaml curl python3-venv"
# debootstrap: the Debian 11 root of tests/worker/test_old_glibc.py; the rest: ../shared/tools/build-cctools' compiler
# (installed here, with the others, so that the CCTools build itself never needs root).
[ "$purpose" = test ] && apt_want="$apt_want debootstrap build-essential swig m4 zlib1g-dev libssl-dev"
need=""
for p in $apt_want; do dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"; done

stamp="$venv/.poncho-stamp"
want=$( { cat "$top/setup.cfg" "$top/setup.py" "$top/pyproject.toml"; "$PYTHON" -c 'import sys; print(sys.version)'; } \
        | sha256sum | cut -c1-64)
venv_ok=0
[ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && venv_ok=1

say="dev/setup.sh ($purpose):"
[ -n "$need" ] && say="$say Debian packages:$need;" || say="$say Debian packages present;"
[ "$venv_ok" = 1 ] && say="$say .venv up to date" || say="$say .venv <- pip install -e .[test] (setup.cfg's declared dependencies only)"
echo "$say" >&2

if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ]; then
    sudo_=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo_="sudo -n"
  else
    echo "dev/setup.sh: these Debian packages are missing and installing them needs root; ask an administrator to run:" >&2
    echo "  apt-get update && apt-get install -y$need" >&2
    echo "then run this command again (the rest needs no root)." >&2
    exit 1
  fi
  # DPkg::Lock::Timeout: a second clone's setup (or the machine's own apt) may hold the lock for a while.
  $sudo_ apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get -o DPkg::Lock::Timeout=600 install -y -qq $need >&2
fi

if [ "$venv_ok" != 1 ]; then
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$top[test]" >&2
  echo "$want" > "$stamp"
fi
# The run shims are installed as copies (setup.cfg's scripts=, verbatim sh files): an edited shim needs a reinstall.
for s in poncho_package_run python_package_run; do
  if ! cmp -s "$top/poncho_wq/data/$s" "$venv/bin/$s"; then
    echo "dev/setup.sh: $s changed: pip install --no-deps -e . (the venv's copy of the shim)" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$top" >&2
    break
  fi
done
echo "$venv/bin/python"
