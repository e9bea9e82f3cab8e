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
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts:$PATH"
cd "$top"
exec python3 -m pytest "$@"
