"""A run's cleanup never reaches outside its configured root (issue 8, item 15).

Every test builds its own directories; each refusal is shown with a root or work directory that would have
removed a canary file had the check been missing, and the canary must survive.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from services.scheduler.runs.cleanup import remove_temporary_products


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """The configured root of work directories, with one run holding temporary and kept products."""
    root = tmp_path / "scheduler"
    _tree(root / "run1", ["a.tmp", "keep.cal", "scratch/b.tmp", "scratch/deep/c.tmp", "logs/job.1.log"])
    _tree(root / "run2", ["other-run.tmp"])
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sibling directory a symlink in a run points to: its canaries must survive every cleanup."""
    directory = tmp_path / "outside"
    _tree(directory, ["canary.tmp", "sub/canary.tmp"])
    return directory


def _canaries_survive(outside: Path) -> bool:
    return (outside / "canary.tmp").exists() and (outside / "sub" / "canary.tmp").exists()


def test_patterns_remove_what_they_match_in_the_run_only(runs: Path) -> None:
    removed = remove_temporary_products(runs, runs / "run1", ["*.tmp", "scratch/**/*.tmp"], [])
    assert sorted(removed) == ["a.tmp", "scratch/b.tmp", "scratch/deep/c.tmp"]
    assert (runs / "run1" / "keep.cal").exists() and (runs / "run2" / "other-run.tmp").exists()
    assert (runs / "run1" / "scratch" / "deep").is_dir()


def test_a_matching_directory_goes_whole_and_once(runs: Path) -> None:
    assert remove_temporary_products(runs, str(runs / "run1"), ["scratch", "scratch/*.tmp"], []) == ["scratch"]
    assert not (runs / "run1" / "scratch").exists()


def test_links_in_the_run_are_removed_themselves_never_followed(runs: Path, outside: Path) -> None:
    work = runs / "run1"
    (work / "linked.tmp").symlink_to(outside / "canary.tmp")  # a matching link to a file outside
    (work / "out").symlink_to(outside)  # a link to a directory outside
    (work / "scratch" / "abs.tmp").symlink_to("/etc/hostname")
    removed = remove_temporary_products(runs, work, ["*.tmp", "out/*", "out/**/*.tmp", "**/*.tmp"], [])
    assert sorted(removed) == ["a.tmp", "linked.tmp", "scratch/abs.tmp", "scratch/b.tmp", "scratch/deep/c.tmp"]
    assert _canaries_survive(outside) and Path("/etc/hostname").exists()
    assert (work / "out").is_symlink(), "nothing matched the link itself, and what is behind it was never seen"
    assert remove_temporary_products(runs, work, ["out"], []) == ["out"]  # matched itself: the link goes
    assert _canaries_survive(outside)


def test_a_work_directory_that_is_itself_a_link_out_is_refused(runs: Path, outside: Path) -> None:
    (runs / "run3").symlink_to(outside)
    assert remove_temporary_products(runs, runs / "run3", ["*.tmp", "**/*.tmp"], []) == []
    assert _canaries_survive(outside)


def test_a_symlinked_root_is_refused_unless_it_is_the_configured_one(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "alias").symlink_to(outside)
    (outside / "run").mkdir()
    (outside / "run" / "x.tmp").write_text("must survive")
    assert remove_temporary_products(tmp_path / "scheduler", tmp_path / "alias" / "run", ["*.tmp"], []) == []
    assert (outside / "run" / "x.tmp").exists()


@pytest.mark.parametrize("root", ["", ".", "scheduler", "./scheduler"])
def test_an_empty_or_relative_root_is_refused(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative root would mean the directories here: the runs' own tree
    for workdir in ("scheduler/run1", str(runs / "run1"), "run1"):
        assert remove_temporary_products(root, workdir, ["*.tmp", "**/*.tmp"], []) == []
    assert (runs / "run1" / "a.tmp").exists() and (runs / "run1" / "scratch" / "deep" / "c.tmp").exists()


def test_root_slash_is_refused_before_any_filesystem_call(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("the filesystem was touched before '/' was refused")

    with monkeypatch.context() as m:
        for name in ("open", "stat", "lstat", "unlink", "rmdir", "scandir"):
            m.setattr(os, name, tripwire)
        m.setattr(shutil, "rmtree", tripwire)
        # The run IS beneath '/': only the refusal of '/' as a root keeps its files.
        assert remove_temporary_products("/", runs / "run1", ["*.tmp"], []) == []
        assert remove_temporary_products("", runs / "run1", ["*.tmp"], []) == []
    assert (runs / "run1" / "a.tmp").exists()


@pytest.mark.parametrize("workdir", ["{runs}", "{runs}/", "{runs}/run1/..", "{runs}/../outside", "{tmp}/outside",
                                     "run1", ""])
def test_a_work_directory_not_strictly_beneath_the_root_is_refused(
    runs: Path, outside: Path, tmp_path: Path, workdir: str
) -> None:
    # The root itself with '*.tmp' would take every run's products; '..' or another directory, the canaries.
    path = workdir.format(runs=runs, tmp=tmp_path)
    assert remove_temporary_products(runs, path, ["*.tmp", "*/*.tmp", "**/*.tmp"], []) == []
    assert _canaries_survive(outside)
    assert (runs / "run1" / "a.tmp").exists() and (runs / "run2" / "other-run.tmp").exists()


def test_a_missing_work_directory_removes_nothing_and_says_so(runs: Path) -> None:
    assert remove_temporary_products(runs, runs / "never-ran", ["*.tmp"], []) == []


def test_a_work_directory_overlapping_a_store_is_refused(runs: Path, tmp_path: Path) -> None:
    assert remove_temporary_products(runs, runs / "run1", ["*.tmp"], [runs / "run1" / "scratch"]) == []
    assert remove_temporary_products(runs, runs / "run1", ["*.tmp"], [runs]) == []
    (tmp_path / "store-link").symlink_to(runs / "run1")  # a store configured through a link to the run
    assert remove_temporary_products(runs, runs / "run1", ["*.tmp"], [tmp_path / "store-link"]) == []
    assert (runs / "run1" / "a.tmp").exists()
