#!/bin/bash
# Per raw file: its byte statistics, into <file>.stats.tmp (a temporary, removed when the run has succeeded).
set -euo pipefail
exec python3 "$(dirname "$0")/night.py" stats "$1"
