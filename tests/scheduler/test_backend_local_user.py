"""Local jobs as an unprivileged account (`run_as`): the jobs' uid, groups and environment, directories the account
can write to but not subvert, root refused unless allowed, and a whole run through the scheduler as that account.

Needs root (to create the account and to switch to it): the machine's test suite runs as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from backend_matrix import JobFactory, is_final, wait_for_status

from services.scheduler.backends import JobState
from services.scheduler.backends.local import LocalBackend
from services.scheduler.backends.wrapper import JobFiles, read_exit_record
from services.scheduler.runs.options import SchedulerOptions
from services.scheduler.runs.submission import BackendPool
from shared.auth import Role
from shared.errors import ConfigurationError
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

JOB_USER = "obsflow-test-jobs"


@pytest.fixture(scope="session")
def job_user() -> pwd.struct_passwd:
    """An unprivileged system account for jobs, created once if the machine has none."""
    if os.geteuid() != 0:
        pytest.fail("running jobs as another account needs root; the tests run as root (as `make test` does in CI)")
    try:
        return pwd.getpwnam(JOB_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
             JOB_USER],
            check=True, capture_output=True, timeout=60,
        )
        return pwd.getpwnam(JOB_USER)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory the job account can reach (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="obsflow-jobs-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def jobs(open_dir: Path) -> Iterator[JobFactory]:
    factory = JobFactory(open_dir)
    for directory in (open_dir / "work", open_dir / "do"):
        directory.chmod(0o755)
    yield factory
    factory.release_all()


async def test_local_jobs_run_as_the_configured_account(job_user, jobs, monkeypatch) -> None:
    monkeypatch.setenv("OBSFLOW_AUTH_SECRET", "the-service-secret")  # the service's, never the job's
    monkeypatch.setenv("OBSFLOW_PIPELINE_HINT", "passed on")
    backend = LocalBackend(total_cpus=2, run_as=JOB_USER)
    spec = jobs("whoami", 'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME user=$USER"\n'
                          'echo "secret=${OBSFLOW_AUTH_SECRET:-none} hint=$OBSFLOW_PIPELINE_HINT"\n'
                          "echo product > product.txt")
    status = await wait_for_status(backend, await backend.submit(spec), is_final)
    log = spec.log_path.read_text()
    assert status.state is JobState.SUCCEEDED, log
    ids = f"uid={job_user.pw_uid} gid={job_user.pw_gid} groups={job_user.pw_gid}"  # none of root's groups
    assert f"{ids} home={job_user.pw_dir} user={JOB_USER}" in log
    assert "secret=none hint=passed on" in log
    assert (spec.workdir / "product.txt").stat().st_uid == job_user.pw_uid
    # The directories the job writes in stay the scheduler's: sticky, so the job cannot rename or remove its files.
    for directory in (spec.workdir, spec.log_path.parent):
        info = directory.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, job_user.pw_gid, 0o1775), directory
    await backend.close()


async def test_a_job_cannot_make_the_scheduler_write_or_read_through_its_links(job_user, jobs, open_dir) -> None:
    victim = open_dir / "victim"  # stands for /etc/passwd: root's, outside the job's reach
    victim.write_text("precious\n")
    victim.chmod(0o644)
    logs = jobs.root / "logs"
    next_log = logs / "second.log"
    planted = " ; ".join(f"ln -s {victim} {next_log}{suffix}" for suffix in ("", ".wrapper.sh", ".status"))
    backend = LocalBackend(total_cpus=2, run_as=JOB_USER)
    first = jobs("first", planted)
    assert (await wait_for_status(backend, await backend.submit(first), is_final)).state is JobState.SUCCEEDED
    assert next_log.is_symlink()

    second = jobs("second", "echo second ran")
    status = await wait_for_status(backend, await backend.submit(second), is_final)
    assert status.state is JobState.SUCCEEDED, next_log.read_text()
    assert victim.read_text() == "precious\n"  # neither truncated as a log nor overwritten as a wrapper
    assert not next_log.is_symlink() and "second ran" in next_log.read_text()
    await backend.close()


def test_a_status_file_that_is_a_link_or_a_fifo_is_not_trusted(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("exit_code=0\nhost=somewhere\n")
    link = JobFiles(tmp_path / "link.log")
    link.status.symlink_to(elsewhere)
    record = read_exit_record(link)
    assert record is not None and record.exit_code == -1 and "untrusted status file" in record.stage
    fifo = JobFiles(tmp_path / "fifo.log")
    os.mkfifo(fifo.status)
    record = read_exit_record(fifo)  # must not block waiting for a writer
    assert record is not None and record.exit_code == -1 and "not a plain file" in record.stage


def test_root_jobs_need_an_explicit_setting(job_user, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        LocalBackend(total_cpus=1)
    assert "run_as" in str(refused.value) and "allow_root" in str(refused.value)
    with pytest.raises(ConfigurationError, match="run_as"):  # the same refusal stops the scheduler's start-up
        BackendPool(SchedulerOptions(workdir_root=tmp_path, backend_options={"local": {"total_cpus": 1}}))
    with structlog.testing.capture_logs() as logs:
        LocalBackend(total_cpus=1, allow_root=True)
    assert [entry["log_level"] for entry in logs if entry["event"] == "local_jobs_run_as_root"] == ["warning"]
    with pytest.raises(ConfigurationError, match="no such user"):
        LocalBackend(total_cpus=1, run_as="obsflow-no-such-user")
    with pytest.raises(ConfigurationError, match="is root"):
        LocalBackend(total_cpus=1, run_as="root")
    assert LocalBackend(total_cpus=1, run_as=JOB_USER).job_user.uid == job_user.pw_uid


@pytest.mark.usefixtures("drop_schemas", "delete_topology")
async def test_a_workflow_runs_as_the_configured_account(settings, job_user, open_dir: Path) -> None:
    scripts = open_dir / "scripts"
    write_scripts(scripts, {"CALIBRATE": 'id -u > "$1.uid"'})
    scripts.chmod(0o755)
    (scripts / "submissions.log").touch()
    (scripts / "submissions.log").chmod(0o666)  # write_scripts' ledger, appended to by every job
    files = input_files(open_dir / "data", 2)
    (open_dir / "data").chmod(0o755)
    s = scheduler_settings(settings, open_dir / "var", backend_options={"local": {"run_as": JOB_USER}})
    headers = {"Authorization": f"Bearer {token(s, Role.READ_APPEND)}"}
    base = f"http://127.0.0.1:{s.http_port('scheduler')}/api/v1"
    async with running_scheduler(s, http=True) as runner, aiohttp.ClientSession(headers=headers) as http:
        admin = {"Authorization": f"Bearer {token(s, Role.ADMIN)}"}
        body = {"name": "nightly", "config_text": workflow_config(scripts, actions='["CALIBRATE"]'),
                "trigger": "manual"}
        async with http.post(f"{base}/workflows", json=body, headers=admin) as r:
            assert r.status == 201, await r.text()
        async with http.post(f"{base}/runs", json={"workflow": "nightly", "files": files}) as r:
            assert r.status == 201, await r.text()
            run_id = (await r.json())["run_id"]
        await wait_finished(runner.ctx.pool, run_id)
        async with http.get(f"{base}/runs/{run_id}") as r:
            detail = await r.json()
    assert detail["state"] == "succeeded", detail
    workdir = Path(detail["workdir"])
    for name in (Path(f).name for f in files):
        assert (workdir / f"{name}.uid").read_text().strip() == str(job_user.pw_uid)
    assert detail["provenance"]["software"]["do_scripts"] == str(scripts)  # recorded, as the jobs' user
