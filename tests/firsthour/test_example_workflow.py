"""The example workflow (examples/night.toml): hera_opm 1.4.0 plans it as obsflow does, its relative
`path_to_do_scripts` is found beneath the script roots, its scripts do real work on correlator-like files, and every
job gets a token of its own to upload its product with."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from services.scheduler.backends.base import JobSpec
from services.scheduler.backends.identity import JobUser
from services.scheduler.backends.wrapper import write_wrapper
from services.scheduler.runs.confinement import PathPolicy, PolicyRefusal
from services.scheduler.runs.job_tokens import SLACK_S, job_tokens
from services.scheduler.runs.submission import job_spec, workflow_options
from services.scheduler.workflow import load_workflow, plan_workflow
from shared.auth import Role, TokenError, verify_token
from tests.firsthour.made_up_site import REPO
from tests.scheduler.test_workflow_differential import (
    _without_deliberate_differences,
    hera_names,
    hera_opm_graph,
    obsflow_graph,
)

EXAMPLES = REPO / "examples"
NIGHT = EXAMPLES / "night.toml"
SCRIPTS = EXAMPLES / "night"


@pytest.mark.parametrize("count", (1, 4, 7, 12, 13))
def test_hera_opm_plans_the_example_as_obsflow_does(count: int, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    files = [str(data / name) for name in hera_names(count)]
    for path in files:
        Path(path).touch()
    work = tmp_path / "work"
    work.mkdir()
    expected = _without_deliberate_differences(hera_opm_graph(NIGHT, files, work))
    actual = _without_deliberate_differences(obsflow_graph(plan_workflow(load_workflow(NIGHT), files)))
    assert list(actual) == list(expected) and actual == expected


def test_twelve_files_make_three_products() -> None:
    jobs = plan_workflow(load_workflow(NIGHT), hera_names(12))
    assert [sum(j.action == a for j in jobs) for a in ("FILE_STATS", "CHUNK_SUMMARY", "ADD_LIBRARIAN_SUMMARY")] == [
        12, 3, 3]


def test_a_relative_path_to_do_scripts_is_looked_up_beneath_the_script_roots(tmp_path: Path) -> None:
    other = tmp_path / "other-root"
    other.mkdir()
    policy = PathPolicy((other, EXAMPLES), ())
    options = load_workflow(NIGHT).options
    assert options.path_to_do_scripts == "night"
    programs = policy.programs(options, "FILE_STATS")
    assert programs.do_script == SCRIPTS / "do_FILE_STATS.sh"  # the first root that has a `night` directory
    assert policy.environment(options) is not None
    for written in ("../examples/night", "night/../../examples/night", "absent", "~/night"):
        with pytest.raises(PolicyRefusal, match="absolute path beneath a script root, or a directory relative"):
            policy.programs(dataclasses.replace(options, path_to_do_scripts=written), "FILE_STATS")
    assert policy.scripts_directory(str(SCRIPTS)) == str(SCRIPTS)  # absolute: as written


def test_the_scripts_compute_statistics_and_a_chunk_summary(tmp_path: Path) -> None:
    work = tmp_path / "run"
    work.mkdir()
    names = hera_names(2)
    (work / names[0]).write_bytes(os.urandom(300_000))  # linked into a run's directory as a run would
    (work / names[1]).write_bytes(bytes(1000) + b"\xff" * 1000)
    outputs = work / "outputs"
    env = {**os.environ, "OBSFLOW_OUTPUTS_FILE": str(outputs)}
    for name in names:
        _run(SCRIPTS / "do_FILE_STATS.sh", [name], work, env)
    _run(SCRIPTS / "do_CHUNK_SUMMARY.sh", [names[0], *(str(tmp_path / "elsewhere" / n) for n in names)], work, env)

    product = work / (names[0].removesuffix(".uvh5") + ".summary.json")
    assert outputs.read_text().split() == [product.name]
    summary = json.loads(product.read_text())
    assert summary["files"] == names and summary["total_bytes"] == 302_000
    noise, halves = summary["per_file"]
    assert noise["size"] == 300_000 and 7.99 < noise["entropy_bits_per_byte"] <= 8.0 and 120 < noise["mean"] < 135
    assert halves == {"file": names[1], "size": 2000, "mean": 127.5, "std": 127.5, "entropy_bits_per_byte": 1.0,
                      "zero_bytes": 1000}
    assert summary["mean_entropy_bits_per_byte"] == round((noise["entropy_bits_per_byte"] + 1.0) / 2, 4)


def test_the_stats_step_says_what_is_wrong_when_the_catalogue_knows_no_copy(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "obsflow").write_text('#!/bin/sh\necho "obsflow: no file named $2 is known" >&2\nexit 2\n')
    (fake / "obsflow").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run([str(SCRIPTS / "do_FILE_STATS.sh"), "zen.2459122.30000.sum.uvh5"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "cannot locate zen.2459122.30000.sum.uvh5: obsflow: no file named" in result.stderr


def test_each_job_gets_a_read_append_token_of_its_own_that_ends_with_its_time_limit(tmp_path: Path) -> None:
    secret = "s" * 16 + "e" * 16 + "cret-of-a-test-site"
    job = _job_row(tmp_path)
    before = time.time()
    spec = job_spec(job, 1, PathPolicy((EXAMPLES,), ()), job_tokens(secret))
    assert spec.do_script == SCRIPTS / "do_FILE_STATS.sh"
    principal = verify_token(secret, spec.env["OBSFLOW_TOKEN"])
    assert principal.account == "job:night-1" and principal.role is Role.READ_APPEND
    expiry = job["timeout_s"] + SLACK_S
    assert verify_token(secret, spec.env["OBSFLOW_TOKEN"], now=before + expiry - 5) == principal
    with pytest.raises(TokenError, match="expired"):
        verify_token(secret, spec.env["OBSFLOW_TOKEN"], now=time.time() + expiry + 5)
    # Given a token of the operator's (OBSFLOW_TOKEN in the scheduler's environment), jobs inherit that one.
    assert "OBSFLOW_TOKEN" not in job_spec(job, 1, PathPolicy((EXAMPLES,), ())).env


def test_the_wrapper_holding_the_token_is_readable_by_the_jobs_group_only(tmp_path: Path) -> None:
    spec = JobSpec(key="K", action="A", args=[], workdir=tmp_path, log_path=tmp_path / "logs" / "K.1.log", ncpu=1,
                   mem_mb=1, queue=None, timeout_s=None, extra_batch_options=None, do_script=Path("/bin/true"),
                   source_script=None, conda_env=None, env={"OBSFLOW_TOKEN": "obsflow.secret.token"})
    files = write_wrapper(spec)
    assert stat.S_IMODE(files.wrapper.stat().st_mode) == 0o750
    if os.geteuid() == 0:  # giving the file to another group needs root
        user = JobUser("nobody", 65534, 65534, (65534,), "/nonexistent")
        files = write_wrapper(spec, user)
        info = files.wrapper.stat()
        assert stat.S_IMODE(info.st_mode) == 0o750 and info.st_gid == 65534


def _run(script: Path, args: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _job_row(tmp_path: Path) -> dict[str, object]:
    workflow_options.cache_clear()
    return {
        "run_id": "night-1", "job_key": "FILE_STATS:zen.2459122.30000.sum.uvh5", "action": "FILE_STATS",
        "config_text": NIGHT.read_text(), "files": json.dumps(["zen.2459122.30000.sum.uvh5"]),
        "args": json.dumps(["zen.2459122.30000.sum.uvh5"]), "backend": "local", "extra_batch_options": None,
        "workdir": str(tmp_path), "ncpu": 1, "mem_mb": 200, "queue": "hera", "timeout_s": 600.0,
        "workflow_name": "night",
    }
