"""Running batch-system commands (sbatch, squeue, qsub, ...) without blocking the event loop."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from services.scheduler.backends.base import BackendError, JobSubmitError

log = structlog.get_logger()

COMMAND_TIMEOUT_S = 60.0

# stderr of a batch command that means "the controller/server is unreachable or busy": worth a retry.
TRANSIENT_STDERR = re.compile(
    r"timed out|timeout|unable to contact|connection refused|connection reset|try again|temporarily"
    r"|busy|cannot connect|could not connect|end of file|communication failure|pbs_iff|munge",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CommandResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        """One line naming the command, its exit status and its stderr."""
        stderr = self.stderr.strip() or "(no stderr)"
        return f"`{' '.join(self.argv)}` exited {self.returncode}: {stderr}"


async def run_command(
    argv: Sequence[str],
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = COMMAND_TIMEOUT_S,
) -> CommandResult:
    """Run `argv` and return its result whatever the exit status; BackendError if it cannot run or hangs."""
    env = {**os.environ, **extra_env} if extra_env else None
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except FileNotFoundError as e:
        raise BackendError(
            f"`{argv[0]}` is not on PATH: install the batch system's client commands on this host"
        ) from e
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError as e:
        process.kill()
        await process.wait()
        raise BackendError(f"`{' '.join(argv)}` did not answer within {timeout_s:g}s; is the server up?") from e
    result = CommandResult(tuple(argv), process.returncode or 0, stdout.decode(), stderr.decode())
    log.debug("batch_command", argv=list(argv), returncode=result.returncode)
    return result


def raise_for_submit(result: CommandResult) -> None:
    """Turn a failed submission into BackendError (server trouble) or JobSubmitError (job refused)."""
    if result.returncode == 0:
        return
    if TRANSIENT_STDERR.search(result.stderr):
        raise BackendError(f"submission failed for now, will be retried: {result.describe()}")
    raise JobSubmitError(f"the batch system refused the job: {result.describe()}")
