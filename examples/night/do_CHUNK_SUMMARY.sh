#!/bin/bash
# Per chunk of neighbouring files: their statistics combined into <first file>.summary.json, the night's product.
# $1 is the chunk's first file, then every file of the chunk ({obsid_list}).
set -euo pipefail
first="$1"
shift
exec python3 "$(dirname "$0")/night.py" summary "$first" "$@"
