"""Only scripts an administrator put in a script root ever run: what an account can name in a workflow config
(do-scripts, source_script, conda_env, obsflow_input_dir, input files, batch options) is checked when a workflow is
registered or a run is planned, and again when each job is submitted. Real PostgreSQL and RabbitMQ; every canary is
a file the refused script would create, looked for after the dispatcher has provably run other jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.scheduler.backends.batch_options import BatchOptionNotAllowed, check_batch_options
from services.scheduler.runs.options import SchedulerOptions
from shared.auth import Role
from shared.errors import ConfigurationError
from shared.settings import Settings, StoreSettings
from tests.scheduler.runs_support import (  # noqa: F401  (delete_topology is a fixture)
    delete_topology,
    input_files,
    running_scheduler,
    scheduler_settings,
    token,
    wait_finished,
    workflow_config,
    write_scripts,
)

pytestmark = pytest.mark.usefixtures("drop_schemas", "delete_topology")


def evil_script(path: Path, canary: Path) -> Path:
    """A script that, if it ever ran (or was sourced), would leave `canary` behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/bash\ntouch {canary}\n")
    path.chmod(0o755)
    return path


def site_with_store(settings: Settings, tmp_path: Path, **scheduler: Any) -> Settings:
    """The tests' scheduler settings with a store at <tmp>/store (where uploads land)."""
    s = scheduler_settings(settings, tmp_path / "var", **scheduler)
    return s.model_copy(update={"stores": [StoreSettings(name="main", root=tmp_path / "store")]})


class Api:
    """The scheduler's API with one token per role."""

    def __init__(self, http: aiohttp.ClientSession, s: Settings) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{s.http_port('scheduler')}/api/v1"
        self.tokens = {role: token(s, role) for role in (Role.READ_APPEND, Role.ADMIN)}

    async def post(self, path: str, body: dict[str, Any], role: Role) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        async with self.http.post(f"{self.base}{path}", json=body, headers=headers) as r:
            return r.status, await r.json()

    async def get(self, path: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[Role.ADMIN]}"}
        async with self.http.get(f"{self.base}{path}", headers=headers) as r:
            assert r.status == 200, await r.text()
            return await r.json()


def uploaded_config(scripts: Path, evil: Path, key: str) -> str:
    """A workflow config that smuggles `evil` in through [Options] `key`."""
    if key == "source_script":
        return workflow_config(scripts, actions='["CALIBRATE"]', extra_options=f'source_script = "{evil}"')
    if key == "path_to_do_scripts":
        return workflow_config(evil.parent, actions='["CALIBRATE"]')
    if key == "conda_env":
        return workflow_config(scripts, actions='["CALIBRATE"]', extra_options=f'conda_env = "{evil.parent}"')
    raise AssertionError(key)


@pytest.mark.parametrize("key", ["source_script", "path_to_do_scripts", "conda_env"])
async def test_a_read_append_account_cannot_run_a_script_it_uploaded(settings, tmp_path: Path, key: str) -> None:
    """The reproduction of issue 8, item 1: a script in a store (as an upload leaves it) named by an ad-hoc config."""
    canary = tmp_path / "canary"
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"CALIBRATE": "true"})
    # What an upload leaves in the store, runnable; do_CALIBRATE.sh for the path_to_do_scripts variant.
    evil = evil_script(tmp_path / "store" / "staging" / "do_CALIBRATE.sh", canary)
    (evil.parent / "etc" / "conda" / "activate.d").mkdir(parents=True)
    evil_script(evil.parent / "etc" / "conda" / "activate.d" / "x.sh", canary)
    files = input_files(tmp_path / "data", 1)
    config = uploaded_config(scripts, evil, key)

    s = site_with_store(settings, tmp_path)
    async with running_scheduler(s, http=True) as runner, aiohttp.ClientSession() as http:
        api = Api(http, s)
        status, body = await api.post("/runs", {"config_text": config, "files": files}, Role.READ_APPEND)
        assert status == 403, body
        assert body["error"]["code"] == "adhoc_config_forbidden"
        assert "registered workflow" in body["error"]["message"] and "allow_adhoc_configs" in body["error"]["message"]

        # An administrator is held to the script roots too: 400 naming the path and the setting.
        status, body = await api.post("/runs", {"config_text": config, "files": files}, Role.ADMIN)
        assert status == 400, body
        assert body["error"]["code"] == "script_not_allowed"
        assert str(evil.parent) in body["error"]["message"] and "script_roots" in body["error"]["message"]
        status, body = await api.post(
            "/workflows", {"name": "sneaky", "config_text": config, "trigger": "manual"}, Role.ADMIN
        )
        assert (status, body["error"]["code"]) == (400, "script_not_allowed"), body

        # The dispatcher has run a legitimate run meanwhile: had anything been accepted, it would have run too.
        await _a_registered_workflow_runs_for_read_append(api, runner, scripts, files)
        assert (await api.get("/runs"))["runs"][0]["workflow"] == "nightly"
        assert len((await api.get("/runs"))["runs"]) == 1
    assert not canary.exists()


async def _a_registered_workflow_runs_for_read_append(api: Api, runner, scripts: Path, files: list[str]) -> None:
    config = workflow_config(scripts, actions='["CALIBRATE"]')
    status, body = await api.post("/workflows", {"name": "nightly", "config_text": config, "trigger": "manual"},
                                  Role.ADMIN)
    assert status == 201, body
    status, body = await api.post("/runs", {"workflow": "nightly", "files": files}, Role.READ_APPEND)
    assert status == 201, body
    await wait_finished(runner.ctx.pool, body["run_id"])
    assert (await api.get(f"/runs/{body['run_id']}"))["state"] == "succeeded"


async def test_adhoc_configs_from_read_append_when_allowed_still_obey_the_script_roots(settings, tmp_path) -> None:
    canary = tmp_path / "canary"
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"CALIBRATE": "true"})
    outside = evil_script(tmp_path / "elsewhere" / "do_CALIBRATE.sh", canary)
    files = input_files(tmp_path / "data", 1)
    s = site_with_store(settings, tmp_path, allow_adhoc_configs=True)
    async with running_scheduler(s, http=True) as runner, aiohttp.ClientSession() as http:
        api = Api(http, s)
        for key in ("source_script", "path_to_do_scripts", "conda_env"):
            config = uploaded_config(scripts, outside, key)
            status, body = await api.post("/runs", {"config_text": config, "files": files}, Role.READ_APPEND)
            assert (status, body["error"]["code"]) == (400, "script_not_allowed"), (key, body)
            assert "script_roots" in body["error"]["message"]
        config = workflow_config(scripts, actions='["CALIBRATE"]')
        status, body = await api.post("/runs", {"config_text": config, "files": files}, Role.READ_APPEND)
        assert status == 201, body
        await wait_finished(runner.ctx.pool, body["run_id"])
        assert (await api.get(f"/runs/{body['run_id']}"))["state"] == "succeeded"
    assert not canary.exists()


async def test_with_no_script_roots_nothing_runs_and_the_message_names_the_setting(settings, tmp_path) -> None:
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"CALIBRATE": "true"})
    s = site_with_store(settings, tmp_path, script_roots=[])
    config = workflow_config(scripts, actions='["CALIBRATE"]')
    async with running_scheduler(s, http=True), aiohttp.ClientSession() as http:
        api = Api(http, s)
        for path, body in (
            ("/runs", {"config_text": config, "files": input_files(tmp_path / "data", 1)}),
            ("/workflows", {"name": "nightly", "config_text": config, "trigger": "session.closed"}),
        ):
            status, answer = await api.post(path, body, Role.ADMIN)
            assert (status, answer["error"]["code"]) == (400, "script_not_allowed"), answer
            assert "no script roots are configured" in answer["error"]["message"]
            assert "[services.scheduler] script_roots" in answer["error"]["message"]


async def test_a_symlink_out_of_a_script_root_is_refused_at_plan_and_at_submit(settings, tmp_path: Path) -> None:
    canary, gate = tmp_path / "canary", tmp_path / "gate"
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"SETUP": f"while [ ! -e {gate} ]; do sleep 0.02; done", "CALIBRATE": "true"})
    outside = evil_script(tmp_path / "elsewhere" / "evil.sh", canary)
    linked = tmp_path / "linked"
    write_scripts(linked, {"SETUP": "true"})
    (linked / "do_CALIBRATE.sh").symlink_to(outside)
    files = input_files(tmp_path / "data", 1)
    s = site_with_store(settings, tmp_path, script_roots=[scripts, linked])
    actions = '["SETUP", "CALIBRATE"]'
    async with running_scheduler(s, http=True) as runner, aiohttp.ClientSession() as http:
        api = Api(http, s)
        # At plan (registration) time: the do-script resolves outside every script root.
        status, body = await api.post("/workflows", {
            "name": "linked", "config_text": workflow_config(linked, actions=actions), "trigger": "manual",
        }, Role.ADMIN)
        assert (status, body["error"]["code"]) == (400, "script_not_allowed"), body
        assert str(linked / "do_CALIBRATE.sh") in body["error"]["message"]

        # At submit time: the do-script was fine when the run was planned and is swapped for a link meanwhile.
        status, body = await api.post("/runs", {
            "config_text": workflow_config(scripts, actions=actions), "files": files,
        }, Role.ADMIN)
        assert status == 201, body
        run_id = body["run_id"]
        (scripts / "do_CALIBRATE.sh").unlink()
        (scripts / "do_CALIBRATE.sh").symlink_to(outside)
        gate.touch()
        await wait_finished(runner.ctx.pool, run_id)
        detail = await api.get(f"/runs/{run_id}")
    assert detail["state"] == "failed", detail
    calibrate = next(j for j in detail["jobs"] if j["action"] == "CALIBRATE")
    attempt = calibrate["attempts"][-1]
    assert attempt["state"] == "refused", calibrate
    assert str(scripts / "do_CALIBRATE.sh") in attempt["detail"] and "script_roots" in attempt["detail"]
    assert not canary.exists()


async def test_inputs_must_lie_beneath_an_input_root(settings, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"CALIBRATE": "true"})
    s = site_with_store(settings, tmp_path)
    inside = input_files(tmp_path / "data", 1)
    (tmp_path / "data" / "escape").symlink_to("/etc")
    async with running_scheduler(s, http=True), aiohttp.ClientSession() as http:
        api = Api(http, s)
        config = workflow_config(scripts, actions='["CALIBRATE"]')
        for files in (["/etc/passwd"], [str(tmp_path / "data" / "escape" / "passwd")], ["../../etc/passwd"]):
            status, body = await api.post("/runs", {"config_text": config, "files": files}, Role.ADMIN)
            assert (status, body["error"]["code"]) == (400, "input_not_allowed"), (files, body)
            assert "input_roots" in body["error"]["message"] or "'..'" in body["error"]["message"]
        elsewhere = workflow_config(scripts, actions='["CALIBRATE"]', extra_options='obsflow_input_dir = "/etc"')
        status, body = await api.post("/runs", {"config_text": elsewhere, "files": ["passwd"]}, Role.ADMIN)
        assert (status, body["error"]["code"]) == (400, "input_not_allowed"), body
        assert "obsflow_input_dir" in body["error"]["message"] and "input_roots" in body["error"]["message"]
        status, body = await api.post("/runs", {"config_text": config, "files": inside}, Role.ADMIN)
        assert status == 201, body


async def test_batch_options_that_name_files_or_identities_are_refused(settings, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_scripts(scripts, {"CALIBRATE": "true"})
    s = site_with_store(settings, tmp_path)

    def config(options: str) -> str:
        text = workflow_config(scripts, actions='["CALIBRATE"]')
        return text.replace("[CALIBRATE]\n", f'[CALIBRATE]\nextra_batch_options = "{options}"\n')

    async with running_scheduler(s, http=True), aiohttp.ClientSession() as http:
        api = Api(http, s)
        for backend, options in (("slurm", "--output=/etc/cron.d/x"), ("slurm", "--uid 0"),
                                 ("slurm", "--export=BASH_ENV=/tmp/x"), ("pbs", "-l prologue=/tmp/x.sh"),
                                 ("pbs", "-W stageout=/etc/x@host:/tmp/x")):
            body = {"name": "w", "config_text": config(options), "trigger": "manual", "backend": backend}
            status, answer = await api.post("/workflows", body, Role.ADMIN)
            assert (status, answer["error"]["code"]) == (400, "batch_option_not_allowed"), (options, answer)
        for backend, options in (("slurm", "--gres=gpu:1 --account 'hera ops' --exclusive"),
                                 ("pbs", "-A hera-ops -l nodes=1:ppn=2,walltime=1:00:00")):
            body = {"name": f"ok-{backend}", "config_text": config(options), "trigger": "manual", "backend": backend}
            status, answer = await api.post("/workflows", body, Role.ADMIN)
            assert status == 201, (options, answer)


def _options_with(tmp_path: Path, script_roots: Any, **scheduler: Any) -> SchedulerOptions:
    settings = Settings(
        data_dir=tmp_path / "var", stores=[StoreSettings(name="main", root=tmp_path / "store")],
        services={"scheduler": {"script_roots": script_roots, **scheduler}},
    )
    return SchedulerOptions.from_settings(settings)


def test_start_up_refuses_script_roots_that_overlap_stores_inputs_or_work_directories(tmp_path: Path) -> None:
    for directory in ("store/uploads", "var/scheduler/x", "scripts", "data", "open"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "open").chmod(0o777)
    refused = {
        str(tmp_path / "store"): "overlaps the store root",  # the store itself
        str(tmp_path / "store" / "uploads"): "overlaps the store root",  # inside it
        str(tmp_path): "overlaps the store root",  # containing it
        str(tmp_path / "var" / "scheduler" / "x"): "work directories",  # where jobs write
        str(tmp_path / "data"): "input root",
        "relative/scripts": "must be an absolute directory",
        str(tmp_path / "missing"): "not an existing directory",
        str(tmp_path / "open"): "written to by the jobs' user or by everyone",
    }
    for root, reason in refused.items():
        with pytest.raises(ConfigurationError, match=reason):
            _options_with(tmp_path, [root], input_roots=[str(tmp_path / "data")])
    with pytest.raises(ConfigurationError, match="allow_adhoc_configs must be true or false"):
        _options_with(tmp_path, [], allow_adhoc_configs="yes")
    # An environment variable gives the list as paths separated by ':'.
    (tmp_path / "more-scripts").mkdir()
    options = _options_with(tmp_path, f"{tmp_path / 'scripts'}:{tmp_path / 'more-scripts'}")
    assert options.script_roots == (tmp_path / "scripts", tmp_path / "more-scripts")
    assert options.allow_adhoc_configs is False
    assert _options_with(tmp_path, []).script_roots == ()  # allowed, and nothing runs (see above)


@pytest.mark.parametrize(("backend", "options", "refused"), [
    ("slurm", "--gres=gpu:1 --account 'hera ops' --exclusive -p hera -C ib", None),
    ("slurm", "--nice=5 --qos=low --mail-type=FAIL --mail-user=ops@example.org", None),
    ("slurm", "--output=/etc/cron.d/x", "--output"),
    ("slurm", "-o /tmp/x", "-o"),
    ("slurm", "--chdir /", "--chdir"),
    ("slurm", "--uid=0", "--uid"),
    ("slurm", "--export=ALL,BASH_ENV=/tmp/x.sh", "--export"),
    ("slurm", "--nodelist=/etc/hosts", "a node list"),
    ("slurm", "--wrap 'rm -rf /'", "--wrap"),
    ("slurm", "--account", "needs a value"),
    ("pbs", "-A hera-ops -l nodes=1:ppn=2,walltime=1:00:00 -q hera -m ae", None),
    ("pbs", "-l prologue=/tmp/x.sh", "prologue"),
    ("pbs", "-W stageout=/etc/x@host:/tmp/x", "-W"),
    ("pbs", "-v BASH_ENV=/tmp/x.sh", "-v"),
    ("pbs", "-S /tmp/evil-shell", "-S"),
    ("local", "--output=/etc/x", None),  # the local backend passes batch options to nothing
])
def test_batch_options_allowlist(backend: str, options: str, refused: str | None) -> None:
    if refused is None:
        check_batch_options(backend, options)
    else:
        with pytest.raises(BatchOptionNotAllowed, match=refused):
            check_batch_options(backend, options)
