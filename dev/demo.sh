#!/usr/bin/env bash
# The README's demo command: set everything up (idempotent), then run examples/quickstart.py.
#   bash dev/demo.sh [--workers N] [--tasks N]
# Needs root (or sudo) only when Debian packages are missing; dev/setup.sh says which, and the line to ask for.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd -P)
py=$(bash "$top/dev/setup.sh" demo)
export PATH="$(dirname "$py"):$PATH"
cd "$top"
exec "$py" examples/quickstart.py "$@"
