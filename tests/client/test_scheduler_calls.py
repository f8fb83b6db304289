"""The client's scheduler calls and a file's provenance, against the running scheduler, ingest and catalog: a
workflow whose upload step mints its product, as a pipeline does."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from shared.api.scheduler import RunDetail, RunSummary, Workflow
from shared.auth import Role
from shared.client import ClientError
from tests.client.site import ClientSite
from tests.conftest import wait_for
from tests.scheduler.runs_support import input_files

pytestmark = pytest.mark.asyncio(loop_scope="package")


def _pipeline(scripts: Path) -> str:
    """FLAG each file into <file>.flags, then upload the flags (hera_opm's ADD_LIBRARIAN_* step)."""
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "do_FLAG.sh").write_text('#!/bin/bash\nset -e\necho "flags for $1" > "$1.flags"\n')
    (scripts / "do_ADD_LIBRARIAN_FLAGS.sh").write_text(
        f'#!/bin/bash\nset -e\n"{sys.executable}" -m shared.cli.main upload "$1.flags" --type flags --json\n')
    for script in scripts.iterdir():
        script.chmod(0o755)
    return textwrap.dedent(f"""\
        [Options]
        makeflow_type = "analysis"
        path_to_do_scripts = "{scripts}"
        timeout = "60"
        base_mem = 10
        base_cpu = 1
        default_queue = "hera"
        obsflow_max_attempts = 1

        [WorkFlow]
        actions = ["FLAG", "ADD_LIBRARIAN_FLAGS"]

        [FLAG]
        args = ["{{basename}}"]

        [ADD_LIBRARIAN_FLAGS]
        prereqs = "FLAG"
        args = ["{{basename}}"]
        """)


async def test_a_run_its_products_and_their_provenance(client_site: ClientSite, monkeypatch) -> None:
    settings = client_site.settings
    # What the upload step's `obsflow upload` reads: where ingest listens and a token (jobs inherit the environment).
    monkeypatch.setenv("OBSFLOW_SITE", settings.site)
    monkeypatch.setenv("OBSFLOW_HTTP_BASE_PORT", str(settings.http_base_port))
    monkeypatch.setenv("OBSFLOW_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("OBSFLOW_TOKEN", client_site.token(Role.READ_APPEND, "pipeline"))
    config = _pipeline(client_site.root / "scripts" / "flagging")
    [raw] = input_files(client_site.root / "data" / "provenance", 1)
    raw_name = Path(raw).name
    product = f"{raw_name}.flags"
    async with client_site.client(Role.ADMIN) as client:
        await client.upload(Path(raw), file_type="uvh5")  # the raw file is in the archive too
        registered = await client.register_workflow("flagging", config, trigger="manual")
        assert (registered.name, registered.trigger, registered.backend) == ("flagging", "manual", "local")
        workflows = {w.name: w for w in await client.workflows()}
        assert isinstance(workflows["flagging"], Workflow) and workflows["flagging"].config_text == config

        started = await client.start_run([raw], workflow="flagging")
        assert started.jobs == 2
        run = await client.wait_for_run(started.run_id, timeout_s=90, poll_s=0.2)
        assert isinstance(run, RunDetail) and run.state == "succeeded", run.jobs
        assert [(j.action, j.state) for j in run.jobs] == [("FLAG", "succeeded"), ("ADD_LIBRARIAN_FLAGS", "succeeded")]
        assert run.jobs[0].attempts[0].exit_code == 0 and run.provenance is not None
        listed = {r.run_id: r for r in await client.runs(limit=1000)}
        assert isinstance(listed[run.run_id], RunSummary) and listed[run.run_id].jobs == {"succeeded": 2}

        async def catalogued(name: str) -> bool:
            return name in [f.name async for f in client.search_all({"name": {"is": name}})]
        await wait_for(lambda: catalogued(product), timeout_s=30)
        made = await client.provenance(product)
        assert made.produced_by is not None and made.produced_by.run == run.run_id
        assert made.produced_by.workflow == "flagging" and made.produced_by.inputs == [raw]
        assert made.run == run and made.job is not None and made.job.action == "ADD_LIBRARIAN_FLAGS"
        assert made.derived == []
        source = await client.provenance(raw_name)
        assert source.produced_by is None and source.run is None
        assert [f.name for f in source.derived] == [product]

        retried = await client.retry_run(run.run_id, failed_only=False)
        assert sorted(retried.restarted_jobs) == sorted(j.job_key for j in run.jobs)
        assert (await client.wait_for_run(run.run_id, timeout_s=90, poll_s=0.2)).state == "succeeded"


async def test_scheduler_refusals(client_site: ClientSite) -> None:
    async with client_site.client(Role.READ_APPEND) as client:
        with pytest.raises(ClientError) as unknown:
            await client.run("no-such-run")
        assert (unknown.value.status, unknown.value.code) == (404, "not_found")
        with pytest.raises(ClientError) as no_workflow:
            await client.start_run(["/x"], workflow="never-registered")
        assert no_workflow.value.status == 404 and "no workflow called 'never-registered'" in str(no_workflow.value)
        with pytest.raises(ClientError) as not_admin:
            await client.register_workflow("w", "[Options]", trigger="manual")
        assert not_admin.value.status == 403
        with pytest.raises(ValueError, match="not both"):
            await client.start_run(["/x"])
