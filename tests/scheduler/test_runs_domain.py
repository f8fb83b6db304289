"""The run engine's pure rules: derived job states, readiness, retry budgets, match clauses, cleanup safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scheduler.runs.cleanup import remove_temporary_products
from services.scheduler.runs.domain import (
    AttemptFact,
    JobFacts,
    JobStatus,
    job_statuses,
    ready_jobs,
    reset_round,
    run_outcome,
    timeout_seconds,
    will_retry,
)
from services.scheduler.runs.matching import MatchError, check_match, matches
from services.scheduler.runs.options import workflow_extras
from services.scheduler.workflow import WorkflowConfigError


def job(key: str, *states: str, prereqs: tuple[str, ...] = (), max_attempts: int = 3, start: int = 1) -> JobFacts:
    attempts = tuple(AttemptFact(i + 1, s, external_id=f"id{i}") for i, s in enumerate(states))
    return JobFacts(key, prereqs, max_attempts, start, attempts)


def graph(*jobs: JobFacts) -> dict[str, JobFacts]:
    return {j.key: j for j in jobs}


def test_readiness_follows_prerequisites() -> None:
    jobs = graph(job("SETUP", "succeeded"), job("A:1", prereqs=("SETUP",)), job("B:1", prereqs=("A:1",)))
    assert ready_jobs(jobs) == ["A:1"]
    assert job_statuses(jobs)["B:1"] == JobStatus.WAITING


def test_in_flight_job_is_not_ready_again() -> None:
    jobs = graph(job("A", "submitting"), job("B", "running"))
    assert ready_jobs(jobs) == [] and set(job_statuses(jobs).values()) == {JobStatus.RUNNING}


def test_failed_attempt_is_retried_until_the_budget_is_spent() -> None:
    assert ready_jobs(graph(job("A", "failed", max_attempts=2))) == ["A"]
    assert job_statuses(graph(job("A", "failed", "timed_out", max_attempts=2)))["A"] == JobStatus.FAILED
    assert will_retry(job("A", "failed", max_attempts=2), "failed", 1) is True
    assert will_retry(job("A", "failed", "failed", max_attempts=2), "failed", 2) is False
    assert will_retry(job("A", "refused"), "refused", 1) is False  # the backend will never accept it as it is


def test_an_attempt_lost_before_reaching_the_backend_does_not_count() -> None:
    lost_early = JobFacts("A", (), 1, 1, (AttemptFact(1, "lost", external_id=None),))
    assert ready_jobs(graph(lost_early)) == ["A"]
    lost_running = JobFacts("A", (), 1, 1, (AttemptFact(1, "lost", external_id="123"),))
    assert job_statuses(graph(lost_running))["A"] == JobStatus.FAILED


def test_failure_blocks_its_dependants_only() -> None:
    jobs = graph(
        job("A:1", "failed", max_attempts=1), job("A:2", "succeeded"),
        job("B:1", prereqs=("A:1",)), job("B:2", prereqs=("A:2",)), job("C", prereqs=("B:1", "B:2")),
    )
    statuses = job_statuses(jobs)
    assert statuses["B:1"] == statuses["C"] == JobStatus.BLOCKED
    assert statuses["B:2"] == JobStatus.READY
    assert not run_outcome(statuses).finished


def test_run_outcome_counts_failed_and_blocked() -> None:
    statuses = job_statuses(graph(job("A", "failed", max_attempts=1), job("B", prereqs=("A",)), job("C", "succeeded")))
    outcome = run_outcome(statuses)
    assert (outcome.finished, outcome.succeeded, outcome.failed_jobs, outcome.blocked_jobs) == (True, False, 1, 1)


def test_retry_rounds_restart_failed_or_everything() -> None:
    jobs = graph(job("A", "failed", max_attempts=1), job("B", "succeeded"), job("C", prereqs=("A",)))
    assert reset_round(jobs, failed_only=True) == {"A": 2}
    assert reset_round(jobs, failed_only=False) == {"A": 2, "B": 2}
    retried = graph(job("A", "failed", max_attempts=1, start=2), job("B", "succeeded"), job("C", prereqs=("A",)))
    assert ready_jobs(retried) == ["A"]  # the old failure no longer counts


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30m", 1800), ("24h", 86400), ("1.5d", 129600), (None, None)]
)
def test_timeouts_are_read_as_timeout1_reads_them(text: str | None, seconds: float | None) -> None:
    assert timeout_seconds(text) == seconds


def test_a_timeout_timeout1_would_not_understand_is_refused() -> None:
    with pytest.raises(WorkflowConfigError, match="24 hours"):
        timeout_seconds("24 hours")


PAYLOAD = {"name": "zen.2459122.30000.sum.uvh5", "file_type": "uvh5", "origin_site": "karoo", "size": 1000,
           "start_jd": 2459122.3}


@pytest.mark.parametrize(("clause", "expected"), [
    (None, True),
    ({"file_type": {"is": "uvh5"}}, True),
    ({"name": {"matches": "zen.%.sum.uvh5"}}, True),
    ({"name": {"matches": "zen.%.diff.uvh5"}}, False),
    ({"name": {"matches": "zen.2459122.3000_.sum.uvh5"}}, True),
    ({"origin_site": {"in": ["nrao", "karoo"]}}, True),
    ({"and": [{"size": {">": 999}}, {"start_jd": {"<": 2459123}}]}, True),
    ({"or": [{"size": {"<": 10}}, {"file_type": {"is-not": "uvh5"}}]}, False),
    ({"none-of": [{"origin_site": {"is": "nrao"}}]}, True),
])
def test_match_clauses(clause: object, expected: bool) -> None:
    assert matches(clause, PAYLOAD) is expected


def test_a_missing_value_compares_false() -> None:
    assert not matches({"start_jd": {">": 0}}, {**PAYLOAD, "start_jd": None})


@pytest.mark.parametrize("clause", [
    {"size": {"matches": "1%"}}, {"colour": {"is": "red"}}, {"and": []}, {"size": {">": "big"}}, [],
    {"file_type": {"is": "a", "in": ["b"]}},
])
def test_bad_match_clauses_are_refused(clause: object) -> None:
    with pytest.raises(MatchError):
        check_match(clause)


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def test_cleanup_removes_matches_but_never_store_files(tmp_path: Path) -> None:
    workdir, store = tmp_path / "run", tmp_path / "store"
    _tree(workdir, ["a.tmp", "keep.cal", "scratch/b.tmp"])
    _tree(store, ["raw.tmp", "raw.uvh5"])
    (workdir / "linked.tmp").symlink_to(store / "raw.tmp")  # an input linked from a store
    (workdir / "storelink").symlink_to(store)  # a directory link into the store
    removed = remove_temporary_products(tmp_path, workdir, ["*.tmp", "scratch/*.tmp", "storelink/*"], [store])
    assert sorted(removed) == ["a.tmp", "linked.tmp", "scratch/b.tmp"]
    assert (store / "raw.tmp").exists() and (store / "raw.uvh5").exists(), "nothing under a store root is touched"
    assert (workdir / "keep.cal").exists()


def test_cleanup_refuses_a_workdir_inside_a_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _tree(store / "run", ["a.tmp"])
    assert remove_temporary_products(store, store / "run", ["*.tmp"], [store]) == []
    assert (store / "run" / "a.tmp").exists()


@pytest.mark.parametrize("pattern", ["../*.tmp", "/tmp/*", "a/../../b", "~/x"])
def test_cleanup_patterns_that_leave_the_workdir_are_refused(pattern: str) -> None:
    config = f'[Options]\nobsflow_cleanup = ["{pattern}"]\n'
    with pytest.raises(WorkflowConfigError, match="relative to the run's work directory"):
        workflow_extras(config)
