"""What `make up` hands to `obsflow up` (scripts/up.sh), with a stand-in `obsflow` that prints its environment: your
OBSFLOW_CONFIG_FILE wins; without one the example site runs, jobs as you when you are not root; the virtualenv's
`bin` comes first on the jobs' PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.firsthour.made_up_site import REPO

RUN_AS = "OBSFLOW_SERVICES__SCHEDULER__BACKEND_OPTIONS__LOCAL__RUN_AS"


@pytest.fixture
def fake_venv() -> Iterator[Path]:
    """A virtualenv whose `obsflow` prints the variables `make up` sets (readable by every account)."""
    venv = Path(tempfile.mkdtemp(prefix="obsflow-fake-venv-"))
    venv.chmod(0o755)
    (venv / "bin").mkdir(mode=0o755)
    (venv / "bin" / "obsflow").write_text(
        f'#!/bin/sh\necho "args=$*"\necho "config=$OBSFLOW_CONFIG_FILE"\necho "path=$PATH"\n'
        f'echo "run_as=${{{RUN_AS}-unset}}"\n'
    )
    (venv / "bin" / "obsflow").chmod(0o755)
    yield venv
    shutil.rmtree(venv)


def _up(venv: Path, env: dict[str, str], user: str | None = None) -> dict[str, str]:
    command = ["bash", str(REPO / "scripts" / "up.sh")]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    result = subprocess.run(command, env={**env, "VENV": str(venv)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OBSFLOW_")}


def test_your_own_site_configuration_wins(fake_venv: Path, tmp_path: Path) -> None:
    mine = tmp_path / "site.toml"
    seen = _up(fake_venv, {**_environment(), "OBSFLOW_CONFIG_FILE": str(mine)})
    assert seen["args"] == "up" and seen["config"] == str(mine) and seen["run_as"] == "unset"
    assert seen["path"].split(":")[0] == str(fake_venv / "bin")


def test_without_one_the_example_site_runs_and_jobs_run_as_you_when_you_are_not_root(fake_venv: Path) -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.fail("this test runs the script as another user: it needs root and runuser (the tests run as root)")
    seen = _up(fake_venv, {**_environment(), "HOME": "/nonexistent"}, user="nobody")
    assert seen["config"] == str(REPO / "examples" / "obsflow.toml")
    assert seen["run_as"] == ""  # cleared: the example's obsflow-jobs is for root only
    assert seen["path"].split(":")[0] == str(fake_venv / "bin")
