"""What crosses between sites, as data: per declared peer, an outbound queue and the shovel that empties it.

Events leave a site through RabbitMQ's own store-and-forward: a durable quorum queue `<prefix>.to.<peer>` bound to
the events exchange with this site's own forwardable routing keys only (never announcements, never a third site's
events: the metadata mesh has no loops), and a dynamic shovel `<prefix>-to-<peer>` that moves it, confirmed, into
the peer's events exchange. While the link is down the events wait in the queue; consumers deduplicate by id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aio_pika.abc import AbstractChannel
from yarl import URL

from shared.bus.topology import QueueSpec
from shared.errors import ConfigurationError
from shared.settings import PeerSettings, Settings

# The event types a site's peers need. Announcements stay home: a peer's ingest would try to read our paths.
FORWARDED_TYPES = ("file.minted", "instance.created", "instance.deleted", "session.closed", "file.conflicted")
PEER_SUFFIX = "-peer"
SHOVEL_RECONNECT_S = 5
LINK_HEARTBEAT_S = 10  # a dropped link (no RST) is noticed within about two heartbeats


def forwardable(event_type: str) -> bool:
    """Whether events of this type cross to peers."""
    return event_type in FORWARDED_TYPES


def forwarded_patterns(site: str) -> tuple[str, ...]:
    """The binding keys of a site's own forwardable events (`karoo.file.minted.#`: with or without a detail)."""
    return tuple(f"{site}.{t}.#" for t in FORWARDED_TYPES)


def peer_user(site: str) -> str:
    """The broker user a site's events arrive as at its peers: `<site>-peer`."""
    return f"{site}{PEER_SUFFIX}"


def peer_of_user(user_id: str | None) -> str | None:
    """The site a `<site>-peer` broker user speaks for, or None for any other user."""
    if user_id is None or not user_id.endswith(PEER_SUFFIX):
        return None
    return user_id[: -len(PEER_SUFFIX)] or None


def peer_routing_keys(site: str) -> str:
    """The routing keys a peer's user may write here: its own site's forwardable events, nothing else."""
    alternatives = "|".join(re.escape(t) for t in FORWARDED_TYPES)
    return f"^{re.escape(site)}\\.({alternatives})(\\..+)?$"


def shovel_uri(amqp_url: str, password: str | None = None, *, heartbeat_s: int = LINK_HEARTBEAT_S) -> str:
    """An AMQP URI as the broker's Erlang client reads it, with `password` (percent-encoded) and a heartbeat.

    aio-pika reads `amqp://host/` as the vhost `/`; the shovel reads it as the vhost "" and is refused, so the vhost
    is always spelled out (`/%2F`).
    """
    url = URL(amqp_url)
    if url.scheme not in ("amqp", "amqps") or not url.host:
        raise ConfigurationError(f"{redact_uri(amqp_url)} is not an amqp:// or amqps:// URL with a host")
    vhost = url.path[1:] or "/"
    user = url.raw_user or ""
    secret = quote(password, safe="") if password is not None else url.raw_password
    credentials = f"{user}:{secret}@" if secret else (f"{user}@" if user else "")
    query = dict(url.query)
    query.setdefault("heartbeat", str(heartbeat_s))
    port = f":{url.port}" if url.explicit_port else ""
    params = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    return f"{url.scheme}://{credentials}{url.raw_host}{port}/{quote(vhost, safe='')}?{params}"


def local_uri(vhost: str) -> str:
    """The shovel's source: a direct connection to the local node, in the site's vhost."""
    return "amqp://" if vhost == "/" else f"amqp:///{quote(vhost, safe='')}"


def redact_uri(uri: str) -> str:
    """`uri` with any password replaced, for messages and logs (never print a shovel definition whole)."""
    return re.sub(r"(amqps?://[^:/@]*:)[^@/]*@", r"\1***@", uri)


def outbound_queue_spec(site: str, prefix: str, peer: str) -> QueueSpec:
    """`<prefix>.to.<peer>`: a quorum queue bound to the site's own forwardable events.

    No delivery limit: a delivery handed back when the link drops counts against it (RabbitMQ 3.10), and an event
    must wait out any number of outages.
    """
    events = f"{prefix}.events"
    return QueueSpec(f"{prefix}.to.{peer}", {"x-queue-type": "quorum"},
                     tuple((events, key) for key in forwarded_patterns(site)))


@dataclass(frozen=True)
class PeerLink:
    """One direction of a metadata link: this site's events for `peer`, queued here and shovelled there."""

    site: str
    prefix: str  # this site's bus prefix
    vhost: str  # this site's vhost (the shovel's source)
    peer: str
    peer_prefix: str
    dest_uri: str = field(repr=False)  # holds the password
    reconnect_delay_s: int = SHOVEL_RECONNECT_S

    @property
    def queue(self) -> str:
        """The outbound queue the shovel empties."""
        return f"{self.prefix}.to.{self.peer}"

    @property
    def shovel(self) -> str:
        """The shovel's name: under this site's prefix, so set-up only ever touches its own."""
        return f"{self.prefix}-to-{self.peer}"

    @property
    def dest_user(self) -> str:
        """The user the shovel logs in as at the peer; every message it publishes carries it as `user_id`."""
        return URL(self.dest_uri.split("?", 1)[0]).user or ""

    def queue_spec(self) -> QueueSpec:
        """The outbound quorum queue, bound to this site's own forwardable events."""
        return outbound_queue_spec(self.site, self.prefix, self.peer)

    def shovel_definition(self) -> dict[str, Any]:
        """The dynamic shovel's value (secret: it holds the peer's password).

        The relay stamps each message with the local publisher's user id; the peer would refuse it from the shovel's
        user (PRECONDITION_FAILED), so the shovel overwrites it with its own: the peer then knows it came from us.
        """
        return {
            "src-protocol": "amqp091", "src-uri": local_uri(self.vhost), "src-queue": self.queue,
            "dest-protocol": "amqp091", "dest-uri": self.dest_uri, "dest-exchange": f"{self.peer_prefix}.events",
            "ack-mode": "on-confirm", "reconnect-delay": self.reconnect_delay_s, "src-delete-after": "never",
            "dest-publish-properties": {"user_id": self.dest_user},
        }

    async def declare_queue(self, channel: AbstractChannel) -> None:
        """Declare the outbound queue and its bindings over AMQP (needs the configure permission: tests, a broker
        set up by hand; `obsflow setup` loads it with the site's definitions)."""
        spec = self.queue_spec()
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for exchange, key in spec.bindings:
            await queue.bind(exchange, routing_key=key)

    def described(self) -> str:
        """The link for people and logs, without its password."""
        return f"{self.queue} -> shovel {self.shovel} -> {redact_uri(self.dest_uri)} {self.peer_prefix}.events"


def peer_link(settings: Settings, peer: PeerSettings, password: str) -> PeerLink:
    """The link from this site to `peer`, logging in with `password` (pure)."""
    if peer.amqp_url is None:
        raise ConfigurationError(f"peer {peer.name!r} has no amqp_url: give the peer's broker URL, without a password "
                                 f"(amqp://{settings.site}-peer@host:5672/vhost)")
    vhost = URL(settings.amqp_url).path[1:] or "/"
    return PeerLink(settings.site, settings.bus.prefix, vhost, peer.name, peer.bus_prefix,
                    shovel_uri(peer.amqp_url, password))


def peer_links(settings: Settings, passwords: Mapping[str, str]) -> list[PeerLink]:
    """The link of every declared peer with a broker URL whose password is in `passwords` (by peer name; pure)."""
    return [peer_link(settings, p, passwords[p.name]) for p in settings.peers
            if p.amqp_url is not None and p.name in passwords]


def read_peer_passwords(settings: Settings) -> dict[str, str]:
    """The password of each declared peer with a broker URL, read from its `amqp_password_file`; a peer whose file
    does not exist yet (its operator has not handed the password over) is left out: its link waits."""
    passwords = {}
    for peer in settings.peers:
        if peer.amqp_url is None:
            continue
        if peer.amqp_password_file is None:
            raise ConfigurationError(f"peer {peer.name!r} has an amqp_url but no amqp_password_file: put the password "
                                     f"the peer's operator gave you for {settings.site}-peer in a file and name it")
        try:
            password = peer.amqp_password_file.read_text().strip()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigurationError(f"cannot read peer {peer.name!r}'s amqp_password_file "
                                     f"{peer.amqp_password_file}: {e.strerror}") from e
        if not password:
            raise ConfigurationError(f"{peer.amqp_password_file} is empty: put the password of "
                                     f"{settings.site}-peer at {peer.name!r} there")
        passwords[peer.name] = password
    return passwords


def waiting_peers(settings: Settings, passwords: Mapping[str, str]) -> list[PeerSettings]:
    """The peers with a broker URL whose password has not been handed over yet (their events queue up here)."""
    return [p for p in settings.peers if p.amqp_url is not None and p.name not in passwords]


def outbound_queue(settings: Settings, peer: str) -> QueueSpec:
    """The outbound queue for `peer`, whether or not its shovel can be set yet."""
    return outbound_queue_spec(settings.site, settings.bus.prefix, peer)
