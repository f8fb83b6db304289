"""Running `obsflow` as a person does: a process of its own, its exit status, what it printed."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Ran:
    """A finished command: its exit status and output."""

    code: int
    out: str
    err: str

    @property
    def no_traceback(self) -> bool:
        """True when nothing of a Python traceback reached the person."""
        return "Traceback" not in self.err and "Traceback" not in self.out


async def obsflow(*args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None,
                  timeout_s: float = 60) -> Ran:
    """Run `obsflow ARGS` in a new session (no controlling terminal), standard input `stdin` (or none)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", *args, env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())
