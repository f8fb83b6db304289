"""The HTTP API and the `obsflow workflow` commands: register, run, status with errors, retry, roles."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from shared.auth import Role
from tests.scheduler.runs_support import (  # noqa: F401  (delete_topology is a fixture)
    STANDARD_SCRIPTS,
    delete_topology,
    input_files,
    running_scheduler,
    scheduler_settings,
    submissions,
    token,
    wait_finished,
    workflow_config,
    write_scripts,
)

pytestmark = pytest.mark.usefixtures("drop_schemas", "delete_topology")


async def obsflow(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the obsflow command line in a subprocess."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli.main", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_run_status_and_retry_of_a_failed_job(settings, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    fixed = tmp_path / "fixed"
    ledger = write_scripts(scripts, {
        "SETUP": "true",
        "CALIBRATE": f'if [ "$1" = zen.2459122.30018.sum.uvh5 ] && [ ! -e {fixed} ]; then echo broken >&2; exit 4; fi',
        "COMBINE": "true",
        "TEARDOWN": "true",
    })
    config = tmp_path / "nightly.toml"
    config.write_text(workflow_config(scripts, extra_options="obsflow_max_attempts = 1"))
    files = input_files(tmp_path / "data", 2)
    s = scheduler_settings(settings, tmp_path / "var")
    env = {
        **os.environ, "OBSFLOW_SITE": s.site, "OBSFLOW_HTTP_BASE_PORT": str(s.http_base_port),
        "OBSFLOW_TOKEN": token(s, Role.ADMIN),
    }
    async with running_scheduler(s, http=True) as runner:
        pool = runner.ctx.pool
        code, out, err = await obsflow(env, "workflow", "register", str(config), "--on", "session.closed")
        assert code == 0 and "registered workflow nightly (on session.closed, backend local)" in out, err
        code, out, err = await obsflow(env, "workflow", "run", "nightly", *files)
        assert code == 0, err
        run_id = out.split()[1]
        await wait_finished(pool, run_id)
        code, out, err = await obsflow(env, "workflow", "status", run_id)
        assert code == 0, err
        assert f"run {run_id} (nightly, local): failed" in out
        assert "CALIBRATE:zen.2459122.30018.sum.uvh5: attempt 1: failed: exit status 4" in out
        assert "BLOCKED" in out and "SUCCEEDED" in out

        fixed.touch()
        code, out, err = await obsflow(env, "workflow", "retry", run_id, "--failed")
        assert code == 0 and "1 jobs will run again" in out, err
        await wait_finished(pool, run_id)
        code, out, err = await obsflow(env, "workflow", "runs")
        assert code == 0 and run_id in out and "succeeded" in out, out + err

        code, _out, err = await obsflow(env, "workflow", "status", "no-such-run")
        assert code == 2 and "no run 'no-such-run'" in err
    ran = submissions(ledger)
    assert ran.count("CALIBRATE:zen.2459122.30018.sum.uvh5") == 2 and ran.count("SETUP") == 1
    assert ran.count("CALIBRATE:zen.2459122.30000.sum.uvh5") == 1  # a retry of failures reruns nothing else


async def test_api_roles_and_bad_requests(settings, tmp_path: Path) -> None:
    # Ad-hoc configs from read-append accounts allowed, so that their malformed configs reach the parser.
    s = scheduler_settings(settings, tmp_path / "var", allow_adhoc_configs=True)
    base = f"http://127.0.0.1:{s.http_port('scheduler')}/api/v1"
    reader = {"Authorization": f"Bearer {token(s, Role.READ_ONLY)}"}
    writer = {"Authorization": f"Bearer {token(s, Role.READ_APPEND)}"}
    admin = {"Authorization": f"Bearer {token(s, Role.ADMIN)}"}
    write_scripts(tmp_path / "scripts", STANDARD_SCRIPTS)
    config = workflow_config(tmp_path / "scripts")
    async with running_scheduler(s, http=True), aiohttp.ClientSession() as http:
        async with http.post(f"{base}/runs", json={"config_text": config, "files": ["a"]}, headers=reader) as r:
            assert r.status == 403
        body = {"name": "w", "config_text": config, "trigger": "session.closed"}
        async with http.post(f"{base}/workflows", json=body, headers=writer) as r:
            assert r.status == 403
        async with http.post(f"{base}/workflows", json={**body, "trigger": "never"}, headers=admin) as r:
            assert r.status == 400 and "trigger" in (await r.json())["error"]["message"]
        bad_match = {**body, "trigger": "file.minted", "match": {"colour": {"is": "red"}}}
        async with http.post(f"{base}/workflows", json=bad_match, headers=admin) as r:
            assert r.status == 400 and "unknown clause 'colour'" in (await r.json())["error"]["message"]
        async with http.post(f"{base}/runs", json={"config_text": "[Options]\n", "files": ["a"]}, headers=writer) as r:
            assert r.status == 400 and "makeflow_type" in (await r.json())["error"]["message"]
        async with http.post(f"{base}/runs", json={"config_text": "/etc/passwd", "files": ["a"]}, headers=writer) as r:
            assert r.status == 400 and "not a file name" in (await r.json())["error"]["message"]
        async with http.post(f"{base}/workflows", json=body, headers=admin) as r:
            assert r.status == 201
        async with http.get(f"{base}/workflows", headers=reader) as r:
            assert [w["name"] for w in (await r.json())["workflows"]] == ["w"]
