"""Running a README's shell session as a person would: one bash, in a terminal (a pty), typing the password when a
prompt asks for one; and reading the session's fenced blocks out of the README."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PROMPT = re.compile(r"(password[^\n]*|again[^\n]*):\s*$", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
MARK = "@@obsflow-readme@@"
LINGER_S = 5.0  # how long output is read after bash has exited


def shell_blocks(readme: Path, section: str) -> list[list[str]]:
    """The commands (non-empty lines) of each ```sh block of the README's `## <section>`, in order."""
    text = readme.read_text()
    start = text.index(f"## {section}\n")
    following = text.find("\n## ", start + 1)
    body = text[start:following if following != -1 else len(text)]
    return [[line for line in block.splitlines() if line.strip()]
            for language, block in _FENCE.findall(body) if language in ("sh", "bash", "shell")]


@dataclass(frozen=True)
class Step:
    """One command of the session and what it printed (its exit status, its output between markers)."""

    command: str
    status: int | None
    output: str


@dataclass(frozen=True)
class Session:
    """A whole session: its steps and the full transcript (background output included)."""

    steps: list[Step]
    transcript: str
    status: int

    def step(self, starts_with: str) -> Step:
        """The one step whose command starts with `starts_with`."""
        [found] = [s for s in self.steps if s.command.startswith(starts_with)]
        return found


def run_session(commands: list[str], *, cwd: Path, env: dict[str, str], password: str, timeout_s: float) -> Session:
    """Run `commands` one after the other in one bash (as typed into a terminal), stopping at the first that fails.

    Each command runs exactly as written; around it the script only prints markers and its exit status, so the
    output of each can be told apart. Prompts for a password are answered with `password`.
    """
    script = "\n".join(
        f"printf '\\n{MARK} begin {i}\\n'\n{command}\n"
        f"status=$?; printf '\\n{MARK} end {i} %d\\n' \"$status\"; [ \"$status\" = 0 ] || exit \"$status\""
        for i, command in enumerate(commands)
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of its own (pty.fork made it the controlling one)
        try:
            os.chdir(cwd)
            os.execvpe("bash", ["bash", "--noprofile", "--norc", "-c", script], env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # a wide terminal: tables stay whole
    transcript, status = _drive(pid, fd, password, timeout_s)
    text = _ANSI.sub("", transcript.replace("\r\n", "\n").replace("\r", ""))
    return Session(_steps(commands, text), text, status)


def _drive(pid: int, fd: int, password: str, timeout_s: float) -> tuple[str, int]:
    chunks: list[str] = []
    answered_at = 0  # the transcript length when the last prompt was answered
    deadline = time.monotonic() + timeout_s
    status: int | None = None
    exited_at = 0.0
    try:
        while True:
            if status is not None and time.monotonic() > exited_at + LINGER_S:
                # bash has ended (a failed step ends it early): its background jobs, if any, hold the terminal.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                exited_at = float("inf")
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)  # bash leads its own session and process group (pty.fork)
                raise TimeoutError(f"the session ran over {timeout_s:.0f} s:\n{''.join(chunks)[-4000:]}")
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: every process holding the terminal has gone
                    data = b""
                if not data:
                    break
                chunks.append(data.decode(errors="replace"))
                text = "".join(chunks)
                if len(text) > answered_at and _PROMPT.search(text[answered_at:]):
                    os.write(fd, password.encode() + b"\n")
                    answered_at = len(text)
            if status is None:
                done, code = os.waitpid(pid, os.WNOHANG)
                if done:
                    status, exited_at = os.waitstatus_to_exitcode(code), time.monotonic()
    finally:
        os.close(fd)
    if status is None:
        _, code = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(code)
    return "".join(chunks), status


def _steps(commands: list[str], text: str) -> list[Step]:
    steps = []
    for i, command in enumerate(commands):
        begin = re.search(rf"^{MARK} begin {i}$", text, re.MULTILINE)
        end = re.search(rf"^{MARK} end {i} (-?\d+)$", text, re.MULTILINE)
        output = text[begin.end():end.start() if end else len(text)] if begin else ""
        steps.append(Step(command, int(end.group(1)) if end else None, output.strip("\n")))
    return steps
