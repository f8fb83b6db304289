#!/usr/bin/env bash
# `make up`: run every service (`obsflow up`) with the site's configuration: yours when OBSFLOW_CONFIG_FILE is set,
# else the example site (examples/obsflow.toml), which runs README.md's first session out of the box.
#
# The example site's jobs run, when obsflow runs as root, as the unprivileged account obsflow-jobs, created here
# (idempotently); not as root, they run as you. Either way the scheduler keeps its rules: scripts only from the
# script roots, never as root (docs/scheduler.md).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
jobs_user=obsflow-jobs

log() { printf 'make up: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

jobs_can_run_obsflow() {  # jobs_can_run_obsflow PYTHON: can the jobs' account import obsflow's client with it?
  # -I: from its installed packages only, not from the working directory (jobs run in their own).
  runuser -u "$jobs_user" -- "$1" -I -c 'import shared.client' >/dev/null 2>&1
}

# The virtualenv's Python lies where the jobs' account cannot go (pyenv's in /root, say): give jobs the system's
# Python of the same version with the virtualenv's packages on its path (CPython keeps extension modules
# compatible within a version: 3.11.x and 3.11.y), in $venv/jobs-python, first on their PATH.
give_jobs_a_python() {
  local system=/usr/bin/python3 jobs_env="$venv/jobs-python" want have packages site
  want=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  have=$("$system" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
  [ "$want" = "$have" ] || die "the account $jobs_user cannot run the virtualenv's Python \
($(readlink -f "$venv/bin/python")) and $system is not Python $want: rebuild the virtualenv with a Python every \
account can run (make clean; make up PYTHON=/usr/bin/python3.N)"
  "$system" -m venv --without-pip --clear "$jobs_env"
  packages=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  site=$("$jobs_env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf 'import site; site.addsitedir(%s)\n' "$("$system" -c 'import sys; print(repr(sys.argv[1]))' "$packages")" \
    >"$site/obsflow-virtualenv.pth"
  printf '#!%s\nimport sys\nfrom shared.cli.main import main\nsys.exit(main())\n' "$jobs_env/bin/python" \
    >"$jobs_env/bin/obsflow"
  chmod 755 "$jobs_env/bin/obsflow"
  jobs_can_run_obsflow "$jobs_env/bin/python" || die "the account $jobs_user cannot run obsflow from $jobs_env \
either; rebuild the virtualenv with a Python every account can run (make clean; make up PYTHON=/usr/bin/python3)"
  log "jobs run obsflow with $system and the virtualenv's packages ($jobs_env): $jobs_user cannot run $(readlink -f "$venv/bin/python")"
  export PATH="$jobs_env/bin:$PATH"
}

# Jobs inherit the scheduler's environment: with the virtualenv first on PATH, a do-script finds `obsflow` (to
# upload its products) and the Python obsflow is installed in.
export PATH="$venv/bin:$PATH"

if [ -z "${OBSFLOW_CONFIG_FILE:-}" ]; then
  export OBSFLOW_CONFIG_FILE="$here/examples/obsflow.toml"
  if [ "$(id -u)" = 0 ]; then
    if ! getent passwd "$jobs_user" >/dev/null; then
      log "creating the system account $jobs_user, which the example site's jobs run as"
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$jobs_user"
    fi
    # The account reads the example's scripts from this clone and runs obsflow from its virtualenv: every
    # directory above them must let it in (root's home, mode 0700, does not).
    if ! runuser -u "$jobs_user" -- test -r "$here/examples/night/night.py"; then
      die "the account $jobs_user, which the example site's jobs run as, cannot read $here/examples (a directory \
above it is private, e.g. /root). Clone obsflow where other accounts may read it (e.g. /opt or /srv), or set \
OBSFLOW_CONFIG_FILE to a site configuration of your own (docs/scheduler.md)."
    fi
    if ! jobs_can_run_obsflow "$venv/bin/python"; then
      give_jobs_a_python
    fi
  else
    # Not root: jobs cannot switch accounts; they run as you.
    export OBSFLOW_SERVICES__SCHEDULER__BACKEND_OPTIONS__LOCAL__RUN_AS=""
  fi
  log "site configuration: $OBSFLOW_CONFIG_FILE (the example site; set OBSFLOW_CONFIG_FILE to use your own)"
fi
exec "$venv/bin/obsflow" up
