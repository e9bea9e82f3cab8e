#!/usr/bin/env bash
# The README's test command: set everything up (idempotent), then run the whole test suite.
#   bash dev/test.sh [pytest args]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/dev/setup.sh"
# Current CCTools (ndcctools.work_queue, ndcctools.taskvine, vine_worker) built from the source snapshot in
# ../shared/vendor (about 30 s once, reused afterwards); Debian's packages give the older `work_queue`.
if [ -x "$top/../shared/tools/build-cctools" ]; then
  eval "$("$top/../shared/tools/build-cctools")"
else
  echo "dev/test.sh: ../shared/tools/build-cctools not found: the TaskVine / ndcctools tests will fail" >&2
fi
# Console scripts and the verbatim sh shim come from the interpreter's own scripts directory (pyenv puts
# bash wrappers called shims earlier on PATH, which are not the files tools copy to workers).
# The Debian 11 root of tests/test_old_glibc.py (debootstrap + a CPython compiled inside: minutes, once, cached in
# ~/.cache/poncho_wq-dev) starts building now, beside the suite, instead of in the middle of it; the test waits for
# it under the script's lock. Its output goes to a log the test's own run of the script repeats on failure.
case " $* " in *"not e2e"*) PONCHO_NO_BACKGROUND_ROOT=1 ;; esac  # the fast subset does not use it
if [ -z "${PONCHO_NO_BACKGROUND_ROOT:-}" ]; then
  mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/poncho_wq-dev"
  nohup bash "$top/dev/debian11-root.sh" >"${XDG_CACHE_HOME:-$HOME/.cache}/poncho_wq-dev/background-build.log" 2>&1 \
    </dev/null &
fi
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts:$PATH"
cd "$top"
exec python3 -m pytest "$@"
