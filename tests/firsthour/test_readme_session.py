"""README.md's first session, exactly as written, against a site started by `make up` from an empty data directory:
a whole night from the simulated correlator to the example workflow's products in the catalogue, with provenance."""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shlex
import urllib.request
from pathlib import Path

import pytest

from services.scheduler.workflow import load_workflow, plan_workflow
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from tests.firsthour.made_up_site import REPO, MadeUpSite, made_up_site, wait_until
from tests.firsthour.terminal import Session, run_session, shell_blocks

pytestmark = pytest.mark.timeout(900)
SECTION = "A first session"
SESSION_TIMEOUT_S = 600.0  # the night takes ~40 s alone; the simulated correlator, quiet period and jobs under load
METRICS_TIMEOUT_S = 120.0


def test_readme_first_session_runs_a_whole_night(unique: str) -> None:
    terminal_1, terminal_2 = shell_blocks(REPO / "README.md", SECTION)
    assert terminal_1 == ["make up"]  # what made_up_site runs
    with made_up_site(unique) as site:
        password = secrets.token_urlsafe(18)
        session = run_session(terminal_2, cwd=REPO, env=site.env, password=password, timeout_s=SESSION_TIMEOUT_S)
        assert session.status == 0, _report(session, site)
        assert password not in session.transcript  # typed at a terminal that did not echo it
        _check_each_step(session, site)
        _check_products_in_the_catalogue(site)


def _check_each_step(session: Session, site: MadeUpSite) -> None:
    """Each command did its part: what it printed agrees with what the site's APIs say happened."""
    names = _night(session)
    jobs = plan_workflow(load_workflow(REPO / "examples" / "night.toml"), names)
    products = sorted(_product_of(job.primary_file) for job in jobs if job.action == "ADD_LIBRARIAN_SUMMARY")
    assert len(names) >= 4 and products

    assert "account admin created" in session.step("obsflow accounts create").output
    assert "registered workflow night" in session.step("obsflow workflow register").output
    simulated = _written(session.step("obsflow simulate correlator").output)
    assert [p.parent for p in simulated] == [site.data_dir / "incoming"] * len(names)
    # The background `events tail` printed every raw file and every product as it was minted.
    minted_lines = [line for line in session.transcript.splitlines() if ".file.minted." in line]
    for name in [*names, *products]:
        assert any(name in line for line in minted_lines), f"no file.minted line for {name}"

    [night] = _api(site, "catalog", "/api/v1/sessions?status=closed")["results"]
    assert night["n_observations"] == len(names)  # the whole night in one session, closed
    closed = session.step("obsflow events tail '*.session.closed'").output
    assert "session.closed" in closed and night["session_id"] in closed
    [run] = _api(site, "scheduler", "/api/v1/runs")["runs"]
    assert run["state"] == "succeeded" and run["jobs"] == {"succeeded": len(jobs)}
    finished = session.step("obsflow events tail '*.workflow.finished'").output
    assert "workflow.finished" in finished and run["run_id"] in finished

    listing = session.step("obsflow sessions list").output
    assert night["session_id"] in listing and "closed" in listing
    runs = session.step("obsflow workflow runs").output
    assert run["run_id"] in runs and "succeeded" in runs

    found = json.loads(session.step("obsflow search").output)["results"]
    assert sorted(f["name"] for f in found) == products
    assert all(f["produced_by"]["run"] == run["run_id"] for f in found)
    first = _api(site, "catalog", f"/api/v1/files/{found[0]['name']}/instances")["instances"]
    assert any(i["path"] in session.step("obsflow locate").output for i in first)

    # The monitor's figures: the session's own look (they trail the log by a few seconds: its tallies are refreshed
    # every 5 s), then, until they have caught up, the whole night counted.
    assert f'obsflow_site_events_total{{site="{night_site(site)}",type="file.minted"}}' in session.step("curl").output
    expected = {"observation.announced": len(names), "file.minted": len(names) + len(products),
                "session.closed": 1, "job.done": len(jobs), "workflow.finished": 1}
    wait_until(lambda: _monitor_counts(site, expected), expected, METRICS_TIMEOUT_S, "the monitor's tallies")
    assert session.steps[-1].status == 0  # kill %1: the background tail was still there to stop


def night_site(site: MadeUpSite) -> str:
    return site.env["OBSFLOW_SITE"]


def _monitor_counts(site: MadeUpSite, expected: dict[str, int]) -> dict[str, int]:
    with urllib.request.urlopen(site.url("monitor", "/metrics"), timeout=30) as answer:
        metrics = answer.read().decode()
    pattern = rf'obsflow_site_events_total\{{site="{night_site(site)}",type="([^"]+)"\}} (\S+)'
    counted = {kind: int(float(n)) for kind, n in re.findall(pattern, metrics)}
    return {kind: counted.get(kind, 0) for kind in expected}


def _check_products_in_the_catalogue(site: MadeUpSite) -> None:
    """What the night left, seen through the site's own API and disks rather than the session's output."""
    body = {"target": "files", "query": {"file_type": {"is": "summary"}}, "limit": 100}
    products = _api(site, "catalog", "/api/v1/search", body)["results"]
    assert products
    [workdir] = (site.data_dir / "scheduler").iterdir()
    for product in products:
        produced_by = product["produced_by"]
        assert produced_by["workflow"] == "night" and produced_by["run"] == workdir.name
        assert produced_by["job"] == f"ADD_LIBRARIAN_SUMMARY:{produced_by['inputs'][0]}"
        assert product["name"] == _product_of(produced_by["inputs"][0])
        assert product["uploader"] == f"job:{workdir.name}"
        summary = json.loads((workdir / product["name"]).read_text())
        assert summary["files"] == produced_by["inputs"] and summary["total_bytes"] > 0
        assert [f["file"] for f in summary["per_file"]] == produced_by["inputs"]
    assert not list(workdir.glob("*.tmp"))  # the run's temporaries were removed (obsflow_cleanup)
    if os.geteuid() == 0:  # the products were written by the unprivileged jobs' account, not by root
        owners = {pwd.getpwuid((workdir / p["name"]).stat().st_uid).pw_name for p in products}
        assert owners == {"obsflow-jobs"}


def _api(site: MadeUpSite, service: str, path: str, body: dict | None = None) -> dict:
    token = issue_token(site_secret(site.settings), Principal("checker", Role.READ_ONLY), 600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(site.url(service, path), data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return dict(json.loads(answer.read()))


def _night(session: Session) -> list[str]:
    """The raw files the simulated correlator wrote (as many as its --count), by name."""
    step = session.step("obsflow simulate correlator")
    words = shlex.split(step.command, comments=True)
    count = int(words[words.index("--count") + 1])
    names = [Path(p).name for p in _written(step.output)]
    assert len(names) == count, step.output
    return names


def _written(output: str) -> list[Path]:
    """The paths `obsflow simulate correlator` printed (the background tail's lines may be interleaved)."""
    return [Path(line) for line in output.splitlines() if line.startswith("/")]


def _product_of(raw_name: str) -> str:
    return raw_name.removesuffix(".uvh5") + ".summary.json"


def _report(session: Session, site: MadeUpSite) -> str:
    failed = next((s for s in session.steps if s.status != 0), None)
    where = f"step {failed.command!r} exited {failed.status}:\n{failed.output}" if failed else "no step failed"
    return f"{where}\n--- transcript ---\n{session.transcript[-6000:]}\n--- make up ---\n{site.log_tail()}"
