"""The invariants a site must hold once quiet after the faults, read from its databases, its broker and its log."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiohttp
from aio_pika.abc import AbstractIncomingMessage

from services.ingest.stores import STAGING_DIR_NAME
from shared.bus.messages import stream_offset
from shared.provision.site import site_work_queues
from shared.settings import SERVICES
from tests.chaos.faults import FaultReport
from tests.chaos.garbage import consumers_of
from tests.chaos.load import LoadReport
from tests.chaos.site import ChaosSite

STREAM_CONSUMERS = ("catalog", "scheduler", "monitor")
LOG_IDLE_S = 3.0  # the log is read to its end: no delivery for this long after the last one
LOG_ATTACH_S = 30.0


@dataclass
class Check:
    """One invariant: whether it holds, the counts behind it, and examples of what broke it."""

    ok: bool
    counts: dict[str, Any]
    examples: list[str] = field(default_factory=list)
    settles: bool = True  # False: about what happened during the faults, which waiting cannot change

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.counts, **({"examples": self.examples[:5]} if self.examples else {})}


@dataclass
class LogContents:
    """What the log stream holds: its last offset, and the events the invariants look at."""

    last_offset: int = -1
    messages: int = 0
    event_ids: set[str] = field(default_factory=set)
    minted_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # name -> file.minted ids
    rejected: list[str] = field(default_factory=list)


async def read_log(amqp_url: str, stream: str) -> LogContents:
    """Read the log stream from its first offset to its end (as the administrator of the private node)."""
    contents = LogContents()
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        queue = await channel.get_queue(stream, ensure=False)
        last = time.monotonic()

        async def take(message: AbstractIncomingMessage) -> None:
            nonlocal last
            last = time.monotonic()
            contents.messages += 1
            contents.last_offset = max(contents.last_offset, stream_offset(message))
            _note(contents, message.body)
            await message.ack()

        tag = await queue.consume(take, arguments={"x-stream-offset": "first"})
        attach_deadline = time.monotonic() + LOG_ATTACH_S
        # The end of a stream is when nothing more comes; the first delivery may take a while on a busy machine.
        def reading() -> bool:
            now = time.monotonic()
            return now - last < LOG_IDLE_S or (not contents.messages and now < attach_deadline)

        while reading():  # noqa: ASYNC110 (a poll: the broker says nothing when a stream ends)
            await asyncio.sleep(0.2)
        await queue.cancel(tag)
    return contents


def _note(contents: LogContents, body: bytes) -> None:
    try:
        event = json.loads(body)
        event_id, event_type, payload = str(event["event_id"]), event["type"], event["payload"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return  # garbage (or a drain marker): checked through the dead letters
    if not isinstance(payload, dict):
        return
    contents.event_ids.add(event_id)
    if event_type == "file.minted":
        contents.minted_ids[str(payload.get("name"))].add(event_id)
    elif event_type == "ingest.rejected":
        contents.rejected.append(f"{payload.get('name') or payload.get('path')}: {payload.get('reason')}")


async def _management(site: ChaosSite, path: str) -> Any:
    auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
    async with aiohttp.ClientSession(headers=auth, timeout=aiohttp.ClientTimeout(total=15)) as session, session.get(
        f"{site.broker.management_url}/api/{path}"
    ) as answer:
        answer.raise_for_status()
        return await answer.json()


async def check_invariants(
    site: ChaosSite, load: LoadReport, faults: FaultReport, announced_ids: set[str]
) -> dict[str, Check]:
    """Every invariant, read now."""
    settings = site.settings
    log = await read_log(site.broker.amqp_url, f"{settings.bus.prefix}.log")
    conn = await site.admin()
    try:
        schema = {name: settings.schema_for(name) for name in SERVICES}
        ingest_files = {r["name"]: r for r in await conn.fetch(
            f'SELECT name, size, checksum FROM "{schema["ingest"]}".files')}
        catalog_files = {r["name"]: r for r in await conn.fetch(
            f'SELECT name, size, checksum FROM "{schema["catalog"]}".files WHERE origin_site = $1', settings.site)}
        ingest_instances = {tuple(r) for r in await conn.fetch(
            f'SELECT file_name, store, path FROM "{schema["ingest"]}".instances')}
        catalog_instances = {tuple(r) for r in await conn.fetch(
            f'SELECT file_name, store, path FROM "{schema["catalog"]}".instances WHERE site = $1', settings.site)}
        uploads_open = await conn.fetchval(f'SELECT count(*) FROM "{schema["ingest"]}".uploads')
        waiting = await conn.fetchval(f'SELECT count(*) FROM "{schema["ingest"]}".waiting_announcements')
        unpublished = {name: await conn.fetchval(
            f'SELECT count(*) FROM "{schema[name]}".outbox WHERE published_at IS NULL') for name in SERVICES}
        checkpoints = {name: await conn.fetchval(
            f'SELECT "offset" FROM "{schema[name]}".stream_checkpoints WHERE consumer = $1', name)
            for name in STREAM_CONSUMERS}
        dead = {name: {bytes(r["body_sha256"]).hex(): r["reason"] for r in await conn.fetch(
            f'SELECT body_sha256, reason FROM "{schema[name]}".dead_letters')} for name in SERVICES}
    finally:
        await conn.close()
    queues = {q.name: await _management(site, f"queues/%2F/{quote(f'{settings.bus.prefix}.{q.name}', safe='')}")
              for q in site_work_queues()}
    connections = await _management(site, "connections")
    nodes = await _management(site, "nodes")
    ready = {name: await site.ready(name) for name in SERVICES}
    staged = sorted(str(p) for store in settings.stores for p in _entries(Path(store.root) / STAGING_DIR_NAME))

    checks: dict[str, Check] = {}
    minted_twice = [f"{n}: {len(ids)} file.minted events" for n, ids in log.minted_ids.items() if len(ids) > 1]
    not_minted = [s.name for s in load.announced if s.name not in ingest_files]
    wrong_size = [s.name for s in (*load.announced, *load.uploaded)
                  if s.name in ingest_files and ingest_files[s.name]["size"] != s.size]
    not_in_log = [n for n in ingest_files if not log.minted_ids.get(n)]
    checks["announced_minted_once"] = Check(
        not (not_minted or wrong_size or minted_twice or not_in_log or log.rejected or waiting),
        {"announced": len(load.announced), "minted": sum(s.name in ingest_files for s in load.announced),
         "minted_twice": len(minted_twice), "wrong_size": len(wrong_size), "rejected": len(log.rejected),
         "minted_without_event": len(not_in_log), "still_waiting": waiting},
        [*not_minted[:3], *minted_twice[:3], *wrong_size[:3], *log.rejected[:3], *not_in_log[:3]],
    )
    uploads_missing = [s.name for s in load.uploaded if s.name not in ingest_files]
    checks["uploads_minted_once"] = Check(
        not uploads_missing, {"uploaded": len(load.uploaded), "missing": len(uploads_missing)}, uploads_missing[:5])
    checks["clients_served"] = Check(
        not load.upload_wrong_answers and not load.publisher_failures,
        {"failed_upload_attempts": sum(load.upload_attempts_failed.values()),
         "wrong_answers": len(load.upload_wrong_answers), "publisher_failures": len(load.publisher_failures)},
        [*load.upload_wrong_answers[:3], *load.publisher_failures[:3]], settles=False,
    )
    missing_in_log = sorted(announced_ids - log.event_ids)
    checks["announcements_in_log"] = Check(
        not missing_in_log, {"announced": len(announced_ids), "missing": len(missing_in_log)}, missing_in_log[:5])
    ingest_view = {n: (r["size"], r["checksum"]) for n, r in ingest_files.items()}
    catalog_view = {n: (r["size"], r["checksum"]) for n, r in catalog_files.items()}
    differ = sorted(set(ingest_view.items()) ^ set(catalog_view.items()))
    checks["catalog_equals_ingest"] = Check(
        not differ and ingest_instances == catalog_instances,
        {"ingest_files": len(ingest_view), "catalog_files": len(catalog_view), "files_differing": len(differ),
         "ingest_instances": len(ingest_instances), "catalog_instances": len(catalog_instances)},
        [str(d) for d in differ[:5]],
    )
    checks["no_staged_leftovers"] = Check(
        not staged and not uploads_open, {"staged_entries": len(staged), "open_uploads": uploads_open}, staged[:5])
    queue_counts = {name: (q.get("messages_ready", 0), q.get("messages_unacknowledged", 0))
                    for name, q in queues.items()}
    blocked = [c.get("name", "?") for c in connections if c.get("state") in ("blocked", "blocking")]
    alarms = [n["name"] for n in nodes if n.get("mem_alarm") or n.get("disk_free_alarm")]
    checks["queues_drained"] = Check(
        all(c == (0, 0) for c in queue_counts.values()) and not blocked and not alarms
        and not any(unpublished.values()),
        {"queues": {n: {"ready": r, "unacked": u} for n, (r, u) in queue_counts.items()},
         "blocked_connections": len(blocked), "alarms": len(alarms), "unpublished_outbox": unpublished},
        [*blocked[:3], *alarms],
    )
    behind = {n: o for n, o in checkpoints.items() if o is None or o < log.last_offset}
    checks["consumers_caught_up"] = Check(
        not behind, {"log_last_offset": log.last_offset, "log_messages": log.messages, "checkpoints": checkpoints},
        [f"{n} at {o}" for n, o in behind.items()],
    )
    not_dead: list[str] = []
    for garbage in faults.garbage:
        not_dead += [f"{garbage.kind} via {garbage.route}: not in {name}'s dead letters"
                     for name in consumers_of(garbage.route) if not dead[name].get(garbage.sha256)]
    attempted = {g.sha256 for g in faults.garbage_attempted}
    good_dead = [f"{name}: {reason}" for name, rows in dead.items() for sha, reason in rows.items()
                 if sha not in attempted]
    checks["garbage_dead_lettered"] = Check(
        not not_dead and not good_dead,
        {"garbage": len(faults.garbage), "missing_dead_letters": len(not_dead),
         "dead_letters": {n: len(rows) for n, rows in dead.items()}, "good_events_dead_lettered": len(good_dead)},
        [*not_dead[:3], *good_dead[:3]],
    )
    checks["services_alive_and_ready"] = Check(
        all(ready.values()),
        {"not_ready": [n for n, ok in ready.items() if not ok],
         "starts": {n: s.starts for n, s in site.services.items()}},
    )
    crashes = {n: s.unexpected_exits for n, s in site.services.items() if s.unexpected_exits}
    checks["no_service_crashed"] = Check(
        not crashes, {"crashes": crashes,
                      "start_refusals": {n: s.start_refusals for n, s in site.services.items() if s.start_refusals}},
        [f"{n}: {reason}" for n, s in site.services.items() for reason in s.crash_reasons], settles=False,
    )
    return checks


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def counts_of(counter: Counter[str]) -> dict[str, int]:
    """A counter as a plain, sorted dict (for the JSON report)."""
    return dict(sorted(counter.items()))
