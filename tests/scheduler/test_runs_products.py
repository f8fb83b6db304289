"""Products into the archive: a workflow's upload step calls `obsflow upload`, and the minted file says which run,
job and inputs produced it (hera_opm's ADD_LIBRARIAN_* pattern, against the real ingest service)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import aio_pika
import aiohttp
import pytest

from services.ingest.service import SPEC as INGEST
from shared.auth import Role
from shared.events import decode_event
from shared.runner import ServiceRunner
from shared.settings import StoreSettings
from tests.conftest import wait_for
from tests.scheduler.runs_support import (  # noqa: F401  (delete_topology is a fixture)
    delete_topology,
    input_files,
    running_scheduler,
    scheduler_settings,
    token,
    wait_finished,
)

pytestmark = pytest.mark.usefixtures("drop_schemas", "delete_topology")


async def test_an_upload_step_mints_its_product_with_produced_by(settings, amqp, tmp_path: Path, monkeypatch) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "do_PRODUCE.sh").write_text('#!/bin/bash\nset -e\necho "flags for $1" > "$1.flags"\n')
    (scripts / "do_ADD_LIBRARIAN_FLAGS.sh").write_text(
        f'#!/bin/bash\nset -e\n"{sys.executable}" -m shared.cli.main upload "$1.flags" --type flags --json\n'
    )
    for script in scripts.iterdir():
        script.chmod(0o755)
    config = textwrap.dedent(f"""\
        [Options]
        makeflow_type = "analysis"
        path_to_do_scripts = "{scripts}"
        timeout = "60"
        base_mem = 10
        base_cpu = 1
        default_queue = "hera"

        [WorkFlow]
        actions = ["PRODUCE", "ADD_LIBRARIAN_FLAGS"]

        [PRODUCE]
        args = ["{{basename}}"]

        [ADD_LIBRARIAN_FLAGS]
        prereqs = "PRODUCE"
        args = ["{{basename}}"]
        """)
    store = tmp_path / "store"
    store.mkdir()
    site = scheduler_settings(settings, tmp_path / "var")
    site = site.model_copy(update={"stores": [StoreSettings(name="main", root=store)]})
    # What a job's `obsflow upload` reads: where ingest listens and a token (the job inherits the environment).
    monkeypatch.setenv("OBSFLOW_SITE", site.site)
    monkeypatch.setenv("OBSFLOW_HTTP_BASE_PORT", str(site.http_base_port))
    monkeypatch.setenv("OBSFLOW_TOKEN", token(site, Role.READ_APPEND))

    channel = await amqp.channel()
    minted: list[object] = []
    files = input_files(tmp_path / "data", 2)
    ingest = ServiceRunner(INGEST, site)
    await ingest.start()
    try:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(f"{site.bus.prefix}.events", routing_key="*.file.minted.#")

        async def on_minted(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            minted.append(decode_event(message.body).payload)
            await message.ack()

        await queue.consume(on_minted)
        base = f"http://127.0.0.1:{site.http_port('scheduler')}/api/v1"
        headers = {"Authorization": f"Bearer {token(site)}"}
        async with running_scheduler(site, http=True) as scheduler, aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{base}/runs", json={"config_text": config, "files": files}) as r:
                assert r.status == 201, await r.text()
                run_id = (await r.json())["run_id"]
            await wait_finished(scheduler.ctx.pool, run_id)
            async with http.get(f"{base}/runs/{run_id}") as r:
                detail = await r.json()
        await wait_for(lambda: len(minted) >= 2)
    finally:
        await ingest.stop()
        async with amqp.channel() as ch:
            await ch.queue_delete(f"{site.bus.prefix}.ingest.announced")

    assert detail["state"] == "succeeded", json.dumps(detail, indent=1)[:2000]
    by_name = {p.name: p for p in minted}  # type: ignore[attr-defined]
    for path in files:
        product = by_name[f"{Path(path).name}.flags"]
        assert product.file_type == "flags"
        assert product.observation_id == Path(path).name.rsplit(".sum", 1)[0]  # it keeps its input's observation
        assert product.produced_by["run"] == run_id
        assert product.produced_by["job"] == f"ADD_LIBRARIAN_FLAGS:{Path(path).name}"
        assert product.produced_by["inputs"] == [path]
