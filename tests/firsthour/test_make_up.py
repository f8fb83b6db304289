"""`make up` from a fresh clone runs the whole system: every service of a new site ready (none crash-looping), the
default store created in an empty data directory, and an announced observation minted into it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.settings import SERVICES
from tests.firsthour.made_up_site import REPO, MadeUpSite, made_up_site

pytestmark = pytest.mark.timeout(600)
MINT_TIMEOUT_S = 120.0


def test_make_up_runs_every_service_and_mints_an_announced_file(unique: str) -> None:
    with made_up_site(unique) as site:
        store = site.data_dir / "stores" / "main"
        assert (store / "main").is_dir() and (store / "staging").is_dir()  # made by ingest on first start

        # The instrument's way in: the simulated correlator writes into <data_dir>/incoming and announces.
        simulate = _obsflow(site, "simulate", "correlator", "--rate", "10", "--size", "64KiB", "--count", "1")
        written = Path(simulate.stderr.strip().splitlines()[-1])
        assert written.parent == site.data_dir / "incoming"

        document = _wait_minted(site, written.name)
        [instance] = document["instances"]
        copy = Path(instance["path"])
        assert copy.parent == store / "main" and copy.read_bytes() == written.read_bytes()

        events = [json.loads(line) for line in site.log.read_text(errors="replace").splitlines()
                  if line.startswith("{")]
        assert not [e for e in events if e["event"] == "service_exited"], site.log_tail()  # none crashed
        started = sorted(e["service"] for e in events if e["event"] == "service_started")
        assert started == sorted(SERVICES)  # each once: nothing was restarted


def _obsflow(site: MadeUpSite, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(REPO / ".venv" / "bin" / "obsflow"), *args], cwd=REPO, env=site.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def _wait_minted(site: MadeUpSite, name: str) -> dict:
    token = issue_token(site_secret(site.settings), Principal("tester", Role.READ_ONLY), 600)
    request = urllib.request.Request(site.url("ingest", f"/api/v1/files/{name}"),
                                     headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + MINT_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return dict(json.loads(answer.read())["file"])
        except urllib.error.HTTPError as e:
            if e.code != 404 or time.monotonic() > deadline:
                pytest.fail(f"{name} not minted ({e.code}) after {MINT_TIMEOUT_S:.0f} s:\n{site.log_tail()}")
        time.sleep(0.2)  # a poll interval between checks of a condition
