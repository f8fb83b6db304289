"""The site's RabbitMQ users, permissions and topology as one definitions document, and loading it.

`rabbitmqctl import_definitions` (on the broker's host, as root) or the management API's `POST /api/definitions`
(Kubernetes, a broker elsewhere) adds or updates what the document names and leaves everything else alone;
`obsflow setup --broker-definitions FILE` writes it for the broker's operators to load instead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from shared.bus.topology import QueueSpec, Topology
from shared.credentials import broker_user
from shared.errors import ConfigurationError
from shared.provision.grants import BrokerGrant
from shared.settings import Settings


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL names (as aio-pika reads it: an empty path is `/`)."""
    return URL(amqp_url).path[1:] or "/"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def broker_definitions(
    settings: Settings, topology: Topology, grants: list[BrokerGrant], passwords: dict[str, str],
    extra_queues: Sequence[QueueSpec] = (),
) -> dict[str, Any]:
    """Users (hashed passwords), their permissions and topic permissions, the vhost and the topology (with
    `extra_queues`: the peers' outbound queues)."""
    vhost = vhost_of(settings.amqp_url)
    users, permissions, topics = [], [], []
    for grant in grants:
        user = grant.user or broker_user(settings, grant.principal)
        users.append({"name": user, "password_hash": password_hash(passwords[grant.principal]),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []})
        permissions.append({"user": user, "vhost": vhost, "configure": grant.configure, "write": grant.write,
                            "read": grant.read})
        topics += [{"user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read}
                   for exchange, write, read in grant.topics]
    document: dict[str, Any] = {"vhosts": [{"name": vhost}], "users": users, "permissions": permissions,
                                "topic_permissions": topics, **topology.definitions(vhost)}
    document["queues"] += [{"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False,
                            "arguments": q.arguments} for q in extra_queues]
    document["bindings"] += [
        {"source": exchange, "vhost": vhost, "destination": q.name, "destination_type": "queue", "routing_key": key,
         "arguments": {}} for q in extra_queues for exchange, key in q.bindings]
    return document


async def import_definitions(definitions: dict[str, Any]) -> None:
    """Load the definitions into the local broker with `rabbitmqctl import_definitions`."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise ConfigurationError(
            "rabbitmqctl is not on this host: run `obsflow setup --broker-definitions FILE` and have the broker's "
            "operators load FILE (rabbitmqctl import_definitions FILE, or RabbitMQ's load_definitions)"
        )
    # Through standard input: the hashes are secrets too, and rabbitmqctl may run as another user than us.
    proc = await asyncio.create_subprocess_exec(
        ctl, "-q", "import_definitions", "--format", "json",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate(json.dumps(definitions).encode())
    if proc.returncode != 0:
        raise ConfigurationError(
            f"rabbitmqctl import_definitions failed ({proc.returncode}): {output.decode(errors='replace').strip()}; "
            "run `obsflow setup` as root on the broker's host"
        )


@dataclass(frozen=True)
class BrokerApi:
    """The broker's management API and its administrator's credentials."""

    url: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_file(cls, url: str, credentials_file: Path) -> BrokerApi:
        """The API at `url` with the `user:password` held in `credentials_file` (blocking: reads it)."""
        try:
            user, _, password = credentials_file.read_text().strip().partition(":")
        except OSError as e:
            raise ConfigurationError(f"cannot read the broker administrator's credentials {credentials_file}: "
                                     f"{e.strerror}") from e
        if not user or not password:
            raise ConfigurationError(f"{credentials_file} must hold the broker administrator's `user:password`")
        return cls(url, user, password)


async def post_definitions(api: BrokerApi, definitions: dict[str, Any]) -> None:
    """Load the definitions through the broker's management HTTP API (`POST /api/definitions`)."""
    url = URL(api.url) / "api" / "definitions"
    try:
        basic = base64.b64encode(f"{api.user}:{api.password}".encode()).decode()
        async with aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as session, session.post(
            url, json=definitions, timeout=aiohttp.ClientTimeout(total=60)
        ) as response:
            if response.status >= 300:
                detail = (await response.text())[:300]
                raise ConfigurationError(f"the broker's management API at {url} refused the definitions "
                                         f"({response.status}): {detail}")
    except aiohttp.ClientError as e:
        raise ConfigurationError(f"cannot reach the broker's management API at {url}: {e}") from e
