#!/bin/sh
'''test' -x "${0%/*}/python" && exec "${0%/*}/python" "$0" "$@"; exec python3 "$0" "$@"
' '''
