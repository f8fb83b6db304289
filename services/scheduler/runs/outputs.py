"""The outputs a job declares: task scripts write the paths they produced, one per line, to
`$OBSFLOW_OUTPUTS_FILE` (a file per attempt next to its log); job.done carries them as `outputs`.

Declared rather than guessed: with jobs of a run running side by side in one work directory, neither a
before/after listing nor modification times can tell whose file is whose.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from services.scheduler.backends.safe_files import read_small_file

log = structlog.get_logger()

MAX_OUTPUTS = 10_000  # a runaway script must not produce an event of unbounded size
OUTPUTS_FILE_LIMIT = 16 * 1024 * 1024  # room for MAX_OUTPUTS long paths, and no more


def outputs_path_for(log_path: str | Path) -> Path:
    """The attempt's outputs file: its log path with `.outputs` instead of `.log`."""
    return Path(log_path).with_suffix(".outputs")


def read_declared_outputs(log_path: str | Path) -> list[str]:
    """The existing files an attempt declared, as absolute paths (relative ones are under its work directory).

    No outputs file, or none of its paths existing, means no outputs (never a guess).
    """
    outputs_file = outputs_path_for(log_path)
    workdir = Path(log_path).parent.parent  # logs live in <workdir>/logs/
    try:
        # Written by the job, maybe as another user: a link, FIFO or huge file there is not read.
        text = read_small_file(outputs_file, OUTPUTS_FILE_LIMIT)
    except OSError as e:
        log.warning("job_outputs_unreadable", outputs_file=str(outputs_file), error=str(e))
        return []
    if text is None:
        return []
    lines = text.splitlines()
    outputs: list[str] = []
    seen: set[str] = set()
    missing: list[str] = []
    for line in lines:
        name = line.strip()
        if not name:
            continue
        path = os.path.normpath(workdir / name)  # an absolute `name` stays as it is
        if path in seen:
            continue
        seen.add(path)
        if os.path.exists(path):
            outputs.append(path)
        else:
            missing.append(name)
    if missing:
        log.warning("job_outputs_missing", outputs_file=str(outputs_file), missing=missing[:20], count=len(missing))
    if len(outputs) > MAX_OUTPUTS:
        log.warning("job_outputs_truncated", outputs_file=str(outputs_file), declared=len(outputs), kept=MAX_OUTPUTS)
    return outputs[:MAX_OUTPUTS]
