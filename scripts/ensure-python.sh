#!/usr/bin/env bash
# Make sure "$PYTHON" (default python3) is 3.11 or newer and can create virtualenvs (Debian splits venv out).
set -euo pipefail
py="${1:-python3}"
command -v "$py" >/dev/null || { echo "ensure-python: $py not found; install Python 3.11+" >&2; exit 1; }
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "ensure-python: $py is $("$py" -V 2>&1); obsflow needs 3.11+ (make PYTHON=python3.11 ...)" >&2; exit 1; }
if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
  else
    echo "ensure-python: $py cannot create virtualenvs; install python3-venv" >&2; exit 1
  fi
fi
