"""Setting the metadata links' shovels on the broker, and removing this site's shovels of peers no longer declared.

The outbound queues are in the site's definitions document (with the topology). The shovels are loaded after it, as
a second document of `parameters` only: RabbitMQ imports parameters before queues, and a shovel started before its
source queue exists declares that queue itself, as a classic one. A shovel's value holds the peer's password: it
goes to rabbitmqctl on standard input or to the management API in a request body, and is never printed or logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from shared.bus.peers import PeerLink, peer_of_user, peer_user, redact_uri
from shared.errors import ConfigurationError
from shared.provision.broker import BrokerApi, import_definitions, post_definitions

log = structlog.get_logger()


@dataclass(frozen=True)
class LinksReport:
    """What setting the links did: the shovels set and the stale ones removed (with their queues)."""

    shovels: tuple[str, ...]
    removed: tuple[str, ...]
    revoked: tuple[str, ...] = ()  # inbound users of peers no longer declared, without rights here now


def shovel_parameters(links: Sequence[PeerLink]) -> dict[str, Any]:
    """The links' shovels as a definitions document (`parameters` of component `shovel`; secret)."""
    return {"parameters": [{"vhost": link.vhost, "component": "shovel", "name": link.shovel,
                            "value": link.shovel_definition()} for link in links]}


def stale_shovels(existing: Sequence[str], prefix: str, links: Sequence[PeerLink]) -> list[str]:
    """This site's shovels (`<prefix>-to-<peer>`) among `existing` whose peer is no longer declared (pure)."""
    wanted = {link.shovel for link in links}
    return sorted(name for name in existing if name.startswith(f"{prefix}-to-") and name not in wanted)


def queue_of_shovel(prefix: str, shovel: str) -> str:
    """The outbound queue a shovel of this site empties: `<prefix>-to-<peer>` empties `<prefix>.to.<peer>`."""
    return f"{prefix}.to.{shovel[len(prefix) + 4:]}"


async def _rabbitmqctl(*args: str) -> str:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise ConfigurationError("rabbitmqctl is not on this host: run `obsflow setup --broker-definitions FILE` and "
                                 "have the broker's operators load FILE and FILE.shovels.json")
    proc = await asyncio.create_subprocess_exec(ctl, "-q", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ConfigurationError(f"rabbitmqctl {args[0]} failed ({proc.returncode}): "
                                 f"{err.decode(errors='replace').strip()}; run `obsflow setup` as root on the broker")
    return out.decode()


async def set_shovels(links: Sequence[PeerLink]) -> None:
    """Set (or update) the links' shovels on the local broker with rabbitmqctl."""
    if links:
        try:
            await import_definitions(shovel_parameters(links))
        except ConfigurationError as e:  # the broker may quote the definitions it refused: passwords included
            raise ConfigurationError(redact_uri(str(e))) from None


async def list_shovels(vhost: str) -> list[str]:
    """The names of the shovels defined in `vhost` on the local broker."""
    out = await _rabbitmqctl("list_parameters", "-p", vhost, "--formatter", "json")
    return [p["name"] for p in json.loads(out or "[]") if p.get("component") == "shovel"]


async def clear_shovel(vhost: str, name: str) -> None:
    """Remove a shovel from the local broker (nothing if there is none)."""
    if name in await list_shovels(vhost):
        await _rabbitmqctl("clear_parameter", "-p", vhost, "shovel", name)


async def delete_queue(vhost: str, name: str) -> None:
    """Delete a queue on the local broker (nothing if there is none)."""
    out = await _rabbitmqctl("list_queues", "-p", vhost, "name", "--formatter", "json")
    if any(q["name"] == name for q in json.loads(out or "[]")):
        await _rabbitmqctl("delete_queue", "-p", vhost, name)


async def shovel_states(vhost: str) -> dict[str, str]:
    """Each shovel's state in `vhost` on the local broker (`running`, `starting`, `terminated`)."""
    out = await _rabbitmqctl("shovel_status", "--formatter", "json")
    return {s["name"]: s["state"] for s in json.loads(out or "[]") if s.get("vhost") == vhost}


async def queue_messages(vhost: str, name: str) -> int | None:
    """How many messages a queue on the local broker holds, ready or delivered and unacknowledged (None: none)."""
    out = await _rabbitmqctl("list_queues", "-p", vhost, "name", "messages", "--formatter", "json")
    return next((int(q["messages"]) for q in json.loads(out or "[]") if q["name"] == name), None)


async def revoke_stale_peer_users(vhost: str, prefix: str, declared: Sequence[str]) -> list[str]:
    """Take from every `<x>-peer` user whose site is no longer a declared peer its rights on this site's events
    exchange (the user itself stays: another site on the broker may have a link from the same peer)."""
    events = f"{prefix}.events"
    keep = {peer_user(p) for p in declared}
    topics = json.loads(await _rabbitmqctl("list_topic_permissions", "-p", vhost, "--formatter", "json") or "[]")
    stale = sorted({t["user"] for t in topics if t["exchange"] == events and peer_of_user(t["user"])
                    and t["user"] not in keep})
    for user in stale:
        await _rabbitmqctl("clear_topic_permissions", "-p", vhost, user, events)
        rights = json.loads(await _rabbitmqctl("list_user_permissions", user, "--formatter", "json") or "[]")
        if any(r["vhost"] == vhost and r["write"] == f"^{re.escape(events)}$" for r in rights):
            await _rabbitmqctl("clear_permissions", "-p", vhost, user)
        log.info("peer_user_revoked", user=user, exchange=events)
    return stale


async def apply_links(
    links: Sequence[PeerLink], vhost: str, prefix: str, declared: Sequence[str] = ()
) -> LinksReport:
    """Set the links' shovels, remove this site's stale ones and their queues, and revoke the inbound users of
    peers no longer `declared`, with rabbitmqctl (idempotent)."""
    await set_shovels(links)
    removed = stale_shovels(await list_shovels(vhost), prefix, links)
    for name in removed:
        await clear_shovel(vhost, name)
        await delete_queue(vhost, queue_of_shovel(prefix, name))
        log.info("peer_link_removed", shovel=name)
    revoked = await revoke_stale_peer_users(vhost, prefix, declared)
    return LinksReport(tuple(link.shovel for link in links), tuple(removed), tuple(revoked))


async def apply_links_through_api(api: BrokerApi, links: Sequence[PeerLink], vhost: str, prefix: str) -> LinksReport:
    """The same through the broker's management API."""
    if links:
        try:
            await post_definitions(api, shovel_parameters(links))
        except ConfigurationError as e:
            raise ConfigurationError(redact_uri(str(e))) from None
    base = URL(api.url) / "api"
    encoded = quote(vhost, safe="")
    basic = base64.b64encode(f"{api.user}:{api.password}".encode()).decode()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"},
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:
            async with session.get(URL(f"{base}/parameters/shovel/{encoded}", encoded=True)) as response:
                existing = [p["name"] for p in await response.json()] if response.status == 200 else []
            removed = stale_shovels(existing, prefix, links)
            for name in removed:
                for path in (f"parameters/shovel/{encoded}/{quote(name, safe='')}",
                             f"queues/{encoded}/{quote(queue_of_shovel(prefix, name), safe='')}"):
                    async with session.delete(URL(f"{base}/{path}", encoded=True)) as response:
                        if response.status >= 300 and response.status != 404:
                            raise ConfigurationError(f"the broker's management API refused to delete {path} "
                                                     f"({response.status})")
    except aiohttp.ClientError as e:
        raise ConfigurationError(f"cannot reach the broker's management API at {api.url}: {e}") from e
    return LinksReport(tuple(link.shovel for link in links), tuple(removed))
