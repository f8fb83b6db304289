"""The soak: load and faults together for a while, then quiet, then the invariants, as one JSON-able report."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog

from shared.failures import describe
from tests.chaos.faults import FaultReport, Faults
from tests.chaos.invariants import Check, check_invariants, counts_of
from tests.chaos.load import Announcer, LoadReport, Uploader
from tests.chaos.site import ChaosSite

log = structlog.get_logger()

UPLOAD_SHARE = 0.2  # of the files, uploaded over HTTP; the rest announced
LOAD_SHARE = 0.85  # of the fault window, during which the load is spread
SETTLE_POLL_S = 3.0
# What a service says when it exits at start-up because a server is away (shared/cli/main.py, shared/runner.py).
_OUTAGE = re.compile(r"cannot reach RabbitMQ|unavailable|went away or is restarting")


@dataclass(frozen=True)
class SoakPlan:
    """How long faults last, how many files go in, the seed of every random choice, how long quiet may take."""

    duration_s: float = 300.0
    files: int = 3000
    seed: int = 0
    settle_timeout_s: float = 300.0


def _start_refused(site: ChaosSite, name: str, returncode: int) -> bool:
    """Whether a service exited because it could not reach PostgreSQL or RabbitMQ while starting (by design: its
    supervisor starts it again) rather than crashing."""
    lines = site.services[name].log.read_text(errors="replace").splitlines() if site.services[name].log.exists() else []
    last = lines[-1] if lines else ""
    return returncode == 2 and last.startswith("obsflow: ") and bool(_OUTAGE.search(last))


def _crash_reason(site: ChaosSite, name: str) -> str:
    """The last line of a crashed service's log that says why: a part that failed, or the CLI's one line."""
    lines = site.services[name].log.read_text(errors="replace").splitlines()[-300:]
    for line in reversed(lines):
        if '"service_part_failed"' in line or '"shutdown_hook_failed"' in line or line.startswith("obsflow: "):
            return line[:500]
    return lines[-1][:500] if lines else "(empty log)"


async def _watch_exits(site: ChaosSite, stop: asyncio.Event) -> None:
    """The soak as the services' supervisor: a process that exits without the soak killing it is recorded (a crash,
    or a start refused during an outage) and started again after a backoff, as `obsflow up` would."""
    failures: Counter[str] = Counter()  # consecutive exits of each service
    restart_at: dict[str, float] = {}
    while not stop.is_set():
        now = time.monotonic()
        for name, service in site.services.items():
            process = service.process
            if process is not None and process.returncode is not None and process.pid not in site.killed:
                site.killed.add(process.pid)  # recorded once
                failures[name] += 1
                if _start_refused(site, name, process.returncode):
                    service.start_refusals += 1
                else:
                    service.unexpected_exits.append(process.returncode)
                    service.crash_reasons.append(_crash_reason(site, name))
                    log.error("chaos_service_crashed", service=name, returncode=process.returncode,
                              log_tail=site.log_tails([name], 10))
                restart_at[name] = now + min(8.0, 0.5 * 2 ** (failures[name] - 1))
            elif service.alive and failures[name] and now - service.started_at > 30:
                failures[name] = 0
            if name in restart_at and now >= restart_at[name]:
                del restart_at[name]
                await site.start_service(name)
        await asyncio.sleep(0.25)  # a poll interval: processes are checked, not awaited, so kills are told apart


async def _settle(site: ChaosSite, load: LoadReport, faults: FaultReport, announced_ids: set[str],
                  timeout_s: float) -> tuple[dict[str, Check], float]:
    """Check the invariants until they all hold or `timeout_s` passes; the last checks and the time it took."""
    started = time.monotonic()
    checks: dict[str, Check] = {}
    while True:
        try:
            checks = await check_invariants(site, load, faults, announced_ids)
        except Exception as e:  # the site is still recovering (a server coming back): check again
            log.warning("chaos_check_failed", error=describe(e))
            checks = {"checked": Check(False, {"error": describe(e)})}
        failing = [name for name, check in checks.items() if not check.ok and check.settles]
        if not failing or time.monotonic() - started > timeout_s:
            return checks, time.monotonic() - started
        log.info("chaos_settling", failing=failing)
        await asyncio.sleep(SETTLE_POLL_S)  # a poll interval between checks of a condition


def _service_errors(site: ChaosSite) -> dict[str, dict[str, int]]:
    """Error events and tracebacks in each service's log, by event name (for the report: where to look)."""
    errors: dict[str, dict[str, int]] = {}
    for name, service in site.services.items():
        seen: Counter[str] = Counter()
        if service.log.exists():
            for line in service.log.read_text(errors="replace").splitlines():
                if line.startswith("Traceback"):
                    seen["Traceback"] += 1
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("level") in ("error", "critical"):
                    seen[str(record.get("event"))] += 1
        if seen:
            errors[name] = dict(seen.most_common(8))
    return errors


async def run_soak(plan: SoakPlan, site: ChaosSite) -> dict[str, Any]:
    """Start the site, run load and faults for `plan.duration_s`, settle, check; the report."""
    began = time.monotonic()
    log.info("chaos_starting_site", site=site.name, directory=str(site.directory))
    await site.start()
    rng = random.Random(plan.seed)
    load, faults = LoadReport(), FaultReport()
    uploads = round(plan.files * UPLOAD_SHARE)
    announcer = Announcer(site.settings, load)
    uploader = Uploader(site.settings, site.secret, load, site.directory / "uploads")
    stop_watching = asyncio.Event()
    watcher = asyncio.create_task(_watch_exits(site, stop_watching))
    started = time.monotonic()
    fault_until = started + plan.duration_s
    load_until = started + plan.duration_s * LOAD_SHARE
    log.info("chaos_load_and_faults", duration_s=plan.duration_s, announced=plan.files - uploads, uploaded=uploads,
             seed=plan.seed)
    try:
        await asyncio.gather(
            Faults(site, random.Random(rng.random()), faults).run(fault_until),
            announcer.run(plan.files - uploads, load_until, random.Random(rng.random())),
            uploader.run(uploads, load_until, random.Random(rng.random()),
                         stop_retrying_at=fault_until + plan.settle_timeout_s),
        )
        faults_ended = time.monotonic()
        log.info("chaos_faults_over", injected=counts_of(faults.injected))
        await announcer.flush(plan.settle_timeout_s)
        await site.wait_ready(list(site.services), exits_fail=False)  # the watcher restarts a refused start
        checks, settled_s = await _settle(site, load, faults, announcer.announced_ids, plan.settle_timeout_s)
    finally:
        stop_watching.set()
        await watcher
    return {
        "ok": all(c.ok for c in checks.values()),
        "invariants": {name: check.as_json() for name, check in checks.items()},
        "faults": counts_of(faults.injected),
        "garbage_attempts_not_confirmed": faults.garbage_attempts_failed,
        "files": {"announced": len(load.announced), "uploaded": len(load.uploaded),
                  "minted": checks["catalog_equals_ingest"].counts["ingest_files"]
                  if "catalog_equals_ingest" in checks else None},
        "upload_attempts_failed": counts_of(load.upload_attempts_failed),
        "publisher_reconnects": load.publisher_reconnects,
        "service_errors_logged": _service_errors(site),
        "duration_s": plan.duration_s, "faults_s": round(faults_ended - started, 1),
        "settled_s": round(settled_s, 1), "elapsed_s": round(time.monotonic() - began, 1), "seed": plan.seed,
        "site": site.name,
    }
