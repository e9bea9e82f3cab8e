#!/usr/bin/env bash
# The README's test command: set everything up (idempotent), then run the whole test suite.
#   bash dev/test.sh [pytest args]        # e.g. -m "not e2e" (the fast subset), -k shim -x
# Runs as root (tests switch to a second user with setpriv, mount tmpfs in namespaces and build a debootstrap root).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd -P)
# dev/setup.sh says in one line what it installs: missing Debian packages, and this checkout's .venv from
# setup.cfg's declared dependencies only (tests never see the machine's own site-packages).
py=$(bash "$top/dev/setup.sh" test)
venv_bin=$(dirname "$py")
# Current CCTools (ndcctools.work_queue, ndcctools.taskvine, vine_worker) built from the source snapshot in
# ../shared/vendor (about 30 s once, reused afterwards; under a lock: two clones' test runs may start together);
# Debian's packages give the older `work_queue`.
if [ -x "$top/../shared/tools/build-cctools" ]; then
  mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}"
  exports=$(PYTHON="$py" flock "${XDG_CACHE_HOME:-$HOME/.cache}/.poncho_wq-cctools-build.lock" \
            "$top/../shared/tools/build-cctools")
  eval "$exports"
else
  echo "dev/test.sh: ../shared/tools/build-cctools not found: the TaskVine / ndcctools tests will fail" >&2
fi
# The Debian 11 root of tests/worker/test_old_glibc.py (debootstrap + a CPython compiled inside: minutes, once, cached
# in
# ~/.cache/poncho_wq-dev) starts building now, beside the suite, instead of in the middle of it; the test waits for
# it under the script's lock. Its output goes to a log the test's own run of the script repeats on failure.
case " $* " in *"not e2e"*) PONCHO_NO_BACKGROUND_ROOT=1 ;; esac  # the fast subset does not use it
if [ -z "${PONCHO_NO_BACKGROUND_ROOT:-}" ]; then
  mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/poncho_wq-dev"
  nohup bash "$top/dev/debian11-root.sh" >"${XDG_CACHE_HOME:-$HOME/.cache}/poncho_wq-dev/background-build.log" 2>&1 \
    </dev/null &
fi
# The venv's bin first: its console scripts and the verbatim sh shim (tools copy the file they find on PATH to
# workers; pyenv's bash wrappers further down PATH are not that file).
export PATH="$venv_bin:$PATH" VIRTUAL_ENV="$(dirname "$venv_bin")"
cd "$top"
exec "$py" -m pytest "$@"
