"""Shared pieces of the run-engine tests: task scripts, workflow configs, input files and a running service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.service import SPEC
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.bus.topology import Topology
from shared.runner import ServiceRunner
from shared.settings import Settings
from tests.conftest import wait_for
from tests.infra import free_port_block

FIRST_JD = 2459122.30000
STEP_JD = 0.00018


def input_files(directory: Path, count: int) -> list[str]:
    """`count` HERA-like input files (tiny), in time order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"zen.{FIRST_JD + i * STEP_JD:.5f}.sum.uvh5"
        path.write_text(f"visibilities {i}\n")
        paths.append(str(path))
    return paths


def write_scripts(directory: Path, bodies: dict[str, str]) -> Path:
    """Write do_<ACTION>.sh for each action; every script first appends its job id to `submissions.log`."""
    directory.mkdir(parents=True, exist_ok=True)
    ledger = directory / "submissions.log"
    for action, body in bodies.items():
        script = directory / f"do_{action}.sh"
        script.write_text(
            "#!/bin/bash\nset -e\n"
            f'echo "$OBSFLOW_JOB_ID $OBSFLOW_ATTEMPT $(pwd)" >> {ledger}\n' + textwrap.dedent(body) + "\n"
        )
        script.chmod(0o755)
    return ledger


def submissions(ledger: Path) -> list[str]:
    """The job ids of every script start, in order."""
    if not ledger.exists():
        return []
    return [line.split()[0] for line in ledger.read_text().splitlines() if line.strip()]


STANDARD_SCRIPTS = {
    "SETUP": 'echo "set up $*" > setup.done',
    "CALIBRATE": 'test -e "$1"\necho "calibrated $1" > "$1.cal"\necho scratch > "$1.tmp"',
    "COMBINE": 'echo "$@" > "combined.$(basename "$1").txt"',
    "TEARDOWN": 'echo "$OBSFLOW_RUN_ID" > teardown.done',
}


def workflow_config(
    scripts: Path, *, timeout: str = "60", extra_options: str = "", actions: str | None = None, queue: str = "hera"
) -> str:
    """A SETUP / per-file CALIBRATE / chunked COMBINE / TEARDOWN workflow over `scripts`."""
    return textwrap.dedent(
        f"""\
        [Options]
        makeflow_type = "analysis"
        path_to_do_scripts = "{scripts}"
        base_mem = 10
        base_cpu = 1
        default_queue = "{queue}"
        timeout = "{timeout}"
        obsflow_cleanup = ["*.tmp"]
        {extra_options}

        [WorkFlow]
        actions = {actions or '["SETUP", "CALIBRATE", "COMBINE", "TEARDOWN"]'}

        [SETUP]
        args = ["night"]

        [CALIBRATE]
        args = ["{{basename}}"]

        [COMBINE]
        prereqs = "CALIBRATE"
        chunk_size = 2
        stride_length = 2
        collect_stragglers = true
        args = ["{{obsid_list}}"]

        [TEARDOWN]
        args = ["done"]
        """
    )


def scheduler_settings(
    settings: Settings,
    data_dir: Path,
    *,
    script_roots: Sequence[Path] | None = None,
    input_roots: Sequence[Path] | None = None,
    **scheduler: Any,
) -> Settings:
    """The test site's settings with a data dir, free ports and `[services.scheduler]` options.

    The tests' layout: the data directory is <tmp>/var, scripts live in <tmp>/scripts (the script root, created
    here) and input files in <tmp>/data (an input root), unless the test names other roots. Local jobs run as
    root only because the tests run as root and say so (`allow_root`); test_backend_local_user.py runs them
    as an unprivileged account.
    """
    base = Path(data_dir).parent
    roots = [base / "scripts"] if script_roots is None else list(script_roots)
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    backend_options = dict(scheduler.pop("backend_options", {}))
    local = {"total_cpus": 4, **backend_options.get("local", {})}
    if "run_as" not in local:
        local.setdefault("allow_root", True)
    backend_options["local"] = local
    options = {
        "poll_interval_s": 0.1,
        "backend_options": backend_options,
        "script_roots": [str(root) for root in roots],
        "input_roots": [str(root) for root in ([base / "data"] if input_roots is None else input_roots)],
        **scheduler,
    }
    return settings.model_copy(
        update={"data_dir": data_dir, "services": {"scheduler": options}, "http_base_port": free_port_block()}
    )


def run_options(tmp_path: Path, **fields: Any) -> SchedulerOptions:
    """Options for tests that drive the run engine without the service, in the tests' layout (scheduler_settings):
    work directories under <tmp>/var, scripts in <tmp>/scripts, inputs in <tmp>/data, local jobs as root."""
    backend_options = dict(fields.pop("backend_options", {}))
    backend_options["local"] = {"allow_root": True, **backend_options.get("local", {})}
    return SchedulerOptions(
        workdir_root=tmp_path / "var", script_roots=(tmp_path / "scripts",), input_roots=(tmp_path / "data",),
        backend_options=backend_options, **fields,
    )


@pytest.fixture
async def delete_topology(settings: Settings) -> AsyncIterator[None]:
    """Delete the test site's exchange, stream and queues afterwards (the service declared them)."""
    yield
    connection = None
    for _ in range(60):  # another suite on this machine restarts RabbitMQ now and then: wait for it
        try:
            connection = await aio_pika.connect(settings.amqp_url)
            break
        except (aio_pika.exceptions.AMQPConnectionError, OSError):
            await asyncio.sleep(0.5)
    if connection is None:
        return
    try:
        async with connection.channel() as channel:
            await Topology(prefix=settings.bus.prefix).delete(channel)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def running_scheduler(settings: Settings, *, http: bool = False) -> AsyncIterator[ServiceRunner]:
    """The scheduler service in this process, stopped afterwards."""
    runner = ServiceRunner(SPEC, settings, http=http)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


def token(settings: Settings, role: Role = Role.ADMIN) -> str:
    """A bearer token of the test site."""
    return issue_token(site_secret(settings), Principal("tester", role), 600)


async def run_state(pool: asyncpg.Pool, run_id: str) -> str | None:
    """'finished' once the run has finished_at, else None."""
    finished = await pool.fetchval("SELECT finished_at FROM runs WHERE run_id = $1", run_id)
    return "finished" if finished else None


async def wait_finished(pool: asyncpg.Pool, run_id: str, timeout_s: float = 30) -> None:
    """Wait until the run has finished."""
    await wait_for(lambda: run_state(pool, run_id), timeout_s=timeout_s, poll_s=0.1)


async def outbox_events(pool: asyncpg.Pool, event_type: str) -> list[dict[str, Any]]:
    """Payloads of the events of one type in the scheduler's outbox, in order."""
    rows = await pool.fetch("SELECT body FROM outbox WHERE event_type = $1 ORDER BY seq", event_type)
    return [json.loads(r["body"])["payload"] for r in rows]
