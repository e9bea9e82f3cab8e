#!/usr/bin/env bash
# The README's demo command: set everything up (idempotent), then run examples/quickstart.py.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/dev/setup.sh"
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts:$PATH"
cd "$top"
exec python3 examples/quickstart.py "$@"
