"""`obsflow upload` and `obsflow simulate correlator` against a running ingest service."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.ingest.cli import parse_size
from shared.auth import Principal, Role, issue_token
from shared.runner import ServiceRunner
from tests.ingest.service_support import (
    counts,
    incoming,
    ingest_settings,
    outbox_events,
    rejection_codes,
    running_ingest,
    write_file,
)

pytestmark = pytest.mark.usefixtures("drop_schemas")


@pytest.fixture
async def ingest(settings, tmp_path: Path) -> AsyncIterator[ServiceRunner]:
    async with running_ingest(ingest_settings(settings, tmp_path / "store")) as runner:
        yield runner


async def _obsflow(runner: ServiceRunner, *args: str) -> tuple[int, str, str]:
    s = runner.settings
    env = {**os.environ, "OBSFLOW_SITE": s.site, "OBSFLOW_AMQP_URL": s.amqp_url, "OBSFLOW_BUS__PREFIX": s.bus.prefix,
           "OBSFLOW_HTTP_BASE_PORT": str(s.http_base_port), "OBSFLOW_LOG_FORMAT": "json",
           "OBSFLOW_DATA_DIR": str(s.data_dir),
           "OBSFLOW_TOKEN": issue_token(s.auth_secret.get_secret_value(), Principal("bob", Role.READ_APPEND), 60)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_upload_command(ingest: ServiceRunner, tmp_path: Path) -> None:
    path = write_file(tmp_path / "zen.2459122.30000.sum.uvh5", b"from the command line")
    code, out, err = await _obsflow(ingest, "upload", str(path), "--json", "--md5")
    assert code == 0, err
    document = json.loads(out)
    assert document["uploader"] == "bob" and document["file_type"] == "uvh5" and document["md5"].startswith("md5:")
    code, out, err = await _obsflow(ingest, "upload", str(path), "--name", "zen.2459122.30000.sum.uvh5",
                                    "--type", "uvh5")
    assert code == 0 and out.startswith("zen.2459122.30000.sum.uvh5: 21 bytes, xxh3-128:")
    other = write_file(tmp_path / "other" / "zen.2459122.30000.sum.uvh5", b"different")
    code, out, err = await _obsflow(ingest, "upload", str(other))
    assert code == 2 and "already exists" in err and "409 name_conflict" in err


async def test_simulated_correlator_is_ingested_out_of_the_box(ingest: ServiceRunner) -> None:
    code, _out, err = await _obsflow(ingest, "simulate", "correlator", "--rate", "100", "--size", "4KiB",
                                     "--count", "3")  # no --dir: the site's default source root
    assert code == 0, err
    assert all(line.startswith(str(incoming(ingest.settings))) for line in err.splitlines()), err
    await ingest.parts.work_consumers[0].drain(timeout_s=30)
    assert await counts(ingest.ctx.pool) == (3, 3, 0)
    minted = await outbox_events(ingest.ctx.pool, "file.minted")
    assert all(e.payload.size == 4096 and e.payload.start_jd for e in minted)


async def test_a_correlator_writing_outside_the_source_roots_is_warned_and_refused(
    ingest: ServiceRunner, tmp_path: Path
) -> None:
    code, _out, err = await _obsflow(ingest, "simulate", "correlator", "--dir", str(tmp_path / "raw"),
                                     "--rate", "100", "--size", "4KiB", "--count", "2")
    assert code == 0 and "is not beneath ingest's [services.ingest] source_roots" in err, err
    await ingest.parts.work_consumers[0].drain(timeout_s=30)
    assert await counts(ingest.ctx.pool) == (0, 0, 0)
    assert await rejection_codes(ingest.ctx.pool) == ["invalid_path", "invalid_path"]


def test_sizes_parse() -> None:
    assert [parse_size(t) for t in ("4096", "4KiB", "64M", "1.5G")] == [4096, 4096, 64 * 1024**2, 3 * 1024**3 // 2]
