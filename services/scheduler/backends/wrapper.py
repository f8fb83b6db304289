"""The wrapper script every backend runs, hera_opm-style, and the exit-status file it leaves behind.

The wrapper sources `source_script`, activates `conda_env`, changes to the work directory, runs
`do_<ACTION>.sh args` under `timeout`, and writes its exit status atomically (temp file, rename) to
`<log>.status`. That file outlives the process and the batch system's memory of the job, which is what
lets a restarted scheduler learn how a job ended.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from services.scheduler.backends.base import ExternalIdError, JobSpec, JobState, JobStatus, JobSubmitError
from services.scheduler.backends.identity import JobUser
from services.scheduler.backends.safe_files import (
    UntrustedFile,
    create_file,
    is_plain_file,
    make_job_dir,
    read_small_file,
)

# `timeout` exits 124 when the time limit ran out; a do-script could exit 124 too, so the wrapper records
# separately whether `timeout` was in force.
TIMEOUT_EXIT_CODE = 124
KILL_AFTER_S = 10
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class JobFiles:
    """The files that sit next to a job's log: its wrapper script, exit-status file and cancel marker."""

    log: Path

    @property
    def wrapper(self) -> Path:
        return self.log.with_name(self.log.name + ".wrapper.sh")

    @property
    def status(self) -> Path:
        return self.log.with_name(self.log.name + ".status")

    @property
    def cancelled(self) -> Path:
        return self.log.with_name(self.log.name + ".cancelled")


@dataclass(frozen=True)
class ExitRecord:
    """What the wrapper wrote when it finished: exit status, host, the stage that ended it, timeout or not."""

    exit_code: int
    host: str | None
    stage: str
    timed_out: bool


def render_wrapper(spec: JobSpec, files: JobFiles) -> str:
    """The bash wrapper script for `spec` (all values shell-quoted)."""
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# obsflow job {q(spec.key)} (action {q(spec.action)}): written by the obsflow scheduler.",
        f"status_file={q(str(files.status))}",
        "write_status() {",
        '    local tmp="$status_file.tmp.$$"',
        '    printf \'exit_code=%s\\nhost=%s\\nstage=%s\\ntimed_out=%s\\n\' "$1" "$(hostname)" "$2" "$3" \\',
        '        >"$tmp" && mv -f "$tmp" "$status_file"',
        "}",
        "give_up() {",
        '    echo "obsflow: $2 failed with exit status $1" >&2',
        '    write_status "$1" "$2" 0',
        '    exit "$1"',
        "}",
        f'echo "obsflow: job {_echo_safe(spec.key)} starting on $(hostname) at $(date -Is)"',
    ]
    for name, value in spec.env.items():
        if not _ENV_NAME.match(name):
            raise JobSubmitError(f"job {spec.key}: environment variable name {name!r} is not a valid shell name")
        lines.append(f"export {name}={q(value)}")
    if spec.source_script:
        lines.append(f"source {_home_relative(spec.source_script)} || give_up $? source_script")
    if spec.conda_env:
        lines.append(f"conda activate {q(spec.conda_env)} || give_up $? conda_env")
    lines.append(f"cd {q(str(spec.workdir))} || give_up $? workdir")
    command = " ".join(q(part) for part in [str(spec.do_script), *spec.args])
    if spec.timeout_s is not None:
        lines.append(f"timeout --kill-after={KILL_AFTER_S}s {_seconds(spec.key, spec.timeout_s)}s {command}")
        lines.append("rc=$?")
        lines.append(f'timed_out=0; [ "$rc" -eq {TIMEOUT_EXIT_CODE} ] && timed_out=1')
    else:
        lines += [command, "rc=$?", "timed_out=0"]
    lines += [
        'echo "obsflow: job finished with exit status $rc at $(date -Is)"',
        'write_status "$rc" action "$timed_out"',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def write_wrapper(spec: JobSpec, user: JobUser | None = None) -> JobFiles:
    """Write the wrapper next to the log (making the log's directory, for `user` too) and clear a previous
    attempt's files; nothing already there is followed (see safe_files)."""
    files = JobFiles(spec.log_path.absolute())
    script = render_wrapper(spec, files)
    make_job_dir(files.log.parent, user)
    files.status.unlink(missing_ok=True)
    files.cancelled.unlink(missing_ok=True)
    # It may hold the job's token (job_tokens): readable by the scheduler's user and the jobs' group only.
    create_file(files.wrapper, script.encode(), 0o750, group=user.gid if user is not None else None)
    return files


def read_exit_record(files: JobFiles) -> ExitRecord | None:
    """The wrapper's exit record, or None while it has not written one (a link or FIFO there is not trusted)."""
    try:
        text = read_small_file(files.status)
    except UntrustedFile as e:
        return ExitRecord(exit_code=-1, host=None, stage=f"untrusted status file ({e.strerror})", timed_out=False)
    if text is None:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        exit_code = int(fields["exit_code"])
    except (KeyError, ValueError):
        return ExitRecord(exit_code=-1, host=fields.get("host"), stage="unreadable status file", timed_out=False)
    return ExitRecord(
        exit_code=exit_code,
        host=fields.get("host") or None,
        stage=fields.get("stage", "action"),
        timed_out=fields.get("timed_out") == "1",
    )


def status_from_record(record: ExitRecord, cancelled: bool) -> JobStatus:
    """The final status a wrapper's exit record means (a cancelled job that did not exit 0 is CANCELLED)."""
    code, host = record.exit_code, record.host
    if code == 0:
        return JobStatus(JobState.SUCCEEDED, 0, host, None)
    if cancelled:
        return JobStatus(JobState.CANCELLED, code, host, "cancelled on request")
    if record.timed_out:
        return JobStatus(JobState.TIMED_OUT, code, host, "time limit reached; killed by timeout")
    if record.stage != "action":
        return JobStatus(JobState.FAILED, code, host, f"{record.stage} failed with exit status {code}")
    return JobStatus(JobState.FAILED, code, host, f"exit status {code}")


def was_cancelled(files: JobFiles) -> bool:
    """Whether cancel() left its marker for this job."""
    return is_plain_file(files.cancelled)


def status_after_the_fact(files: JobFiles, who: str) -> JobStatus:
    """Final status of a job the backend no longer knows about, from the files it left; LOST if none."""
    record = read_exit_record(files)
    cancelled = was_cancelled(files)
    if record is not None:
        return status_from_record(record, cancelled)
    if cancelled:
        return JobStatus(JobState.CANCELLED, None, None, "cancelled on request")
    return JobStatus(
        JobState.LOST, None, None, f"{who} is gone and left no exit status in {files.status}; resubmit the job"
    )


def mark_cancelled(files: JobFiles) -> None:
    """Leave a marker so that a job killed by cancel() reads as CANCELLED, not LOST, even after a restart."""
    files.cancelled.parent.mkdir(parents=True, exist_ok=True)
    create_file(files.cancelled)


def batch_external_id(batch_job_id: str, files: JobFiles) -> str:
    """The external id of a batch job: `<batch job id>:<log path>` (the log path finds the status file)."""
    return f"{batch_job_id}:{files.log}"


def parse_batch_external_id(external_id: str, backend: str) -> tuple[str, JobFiles]:
    """The batch job id and job files named by an id from batch_external_id."""
    # Split at the first ":/": a PBS id may hold a colon ("12.server:15001"), a log path is absolute.
    batch_job_id, sep, rest = external_id.partition(":/")
    log = "/" + rest
    if not sep or not batch_job_id:
        raise ExternalIdError(
            f"{external_id!r} is not a {backend} external id (expected '<job id>:<absolute log path>')"
        )
    return batch_job_id, JobFiles(Path(log))


def _seconds(key: str, timeout_s: float) -> str:
    if timeout_s <= 0:
        raise JobSubmitError(f"job {key}: timeout_s must be positive, got {timeout_s}")
    return f"{timeout_s:.3f}"


def _home_relative(path: str) -> str:
    """Shell-quote a path but keep a leading ~ meaning $HOME, as hera_opm's unquoted `source` line does."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + shlex.quote(path[1:]) if len(path) > 1 else '"$HOME"'
    return shlex.quote(path)


def _echo_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./:@+=-]", "_", text)
