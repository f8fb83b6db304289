"""Every example of docs/client.md runs, as written and in order, against the running services."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from shared.auth import Role
from shared.client import ClientError
from tests.client.site import ClientSite
from tests.conftest import wait_for
from tests.scheduler.runs_support import STANDARD_SCRIPTS, workflow_config, write_scripts

pytestmark = pytest.mark.asyncio(loop_scope="package")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "client.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
FILES = ("zen.2459845.25000.sum.uvh5", "zen.2459845.25012.sum.uvh5")  # the files the examples name


async def _catalogued(site: ClientSite) -> bool:
    """Every file of the examples that ingest has minted is in the catalogue too."""
    async with site.client(Role.READ_ONLY) as client:
        for name in FILES:
            try:
                await client.file(name)
            except ClientError:
                continue  # not uploaded (yet)
            try:
                await client.catalog_file(name)
            except ClientError:
                return False
    return True


async def test_the_examples_of_the_client_page_run(client_site: ClientSite) -> None:
    assert len(EXAMPLES) >= 8
    settings = client_site.settings
    # Where a pipeline author works: the files beneath the scheduler's input roots, a workflow registered.
    workdir = client_site.root / "data" / "docs"
    workdir.mkdir(parents=True)
    for i, name in enumerate(FILES):
        (workdir / name).write_bytes(f"visibilities of the examples {i}\n".encode())
    scripts = client_site.root / "scripts" / "docs"
    write_scripts(scripts, STANDARD_SCRIPTS)
    async with client_site.client(Role.ADMIN) as admin:
        await admin.register_workflow("nightly", workflow_config(scripts), trigger="manual")
    env = {**os.environ, "OBSFLOW_SITE": settings.site, "OBSFLOW_HTTP_BASE_PORT": str(settings.http_base_port),
           "OBSFLOW_AMQP_URL": settings.amqp_url, "OBSFLOW_BUS__PREFIX": settings.bus.prefix,
           "OBSFLOW_DATA_DIR": str(settings.data_dir), "OBSFLOW_TOKEN": client_site.token(Role.ADMIN, "author")}
    for number, example in enumerate(EXAMPLES, 1):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", example, cwd=workdir, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, f"example {number} of docs/client.md failed:\n{example}\n{err.decode()}"
        assert out, f"example {number} printed nothing"
        await wait_for(lambda: _catalogued(client_site), timeout_s=30)
