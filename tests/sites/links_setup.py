"""The shovels of a test site's `[[peers]]`, set up with obsflow setup's own pieces (`peer_link`, `set_shovels`, or
`apply_links_through_api` on a private node with the management API), with a short heartbeat and reconnect delay so a
cut link is noticed (and a restored one used) within seconds."""

from __future__ import annotations

import asyncio
import json

import aio_pika

from shared.bus.peers import PeerLink, shovel_uri
from shared.provision.broker import BrokerApi
from shared.provision.shovels import apply_links_through_api, clear_shovel, delete_queue, set_shovels, shovel_states
from shared.settings import Settings
from tests.conftest import wait_for
from tests.private_servers import PrivateRabbitMQ

VHOST = "/"


def links_of(settings: Settings) -> list[PeerLink]:
    """One link per declared peer (the password from its file, as setup reads it)."""
    links = []
    for peer in settings.peers:
        assert peer.amqp_url is not None and peer.amqp_password_file is not None
        dest = shovel_uri(peer.amqp_url, peer.amqp_password_file.read_text().strip(), heartbeat_s=2)
        links.append(PeerLink(settings.site, settings.bus.prefix, VHOST, peer.name, peer.bus_prefix, dest,
                              reconnect_delay_s=1))
    return links


def management_api(broker: PrivateRabbitMQ) -> BrokerApi:
    """A private node's management API, as its administrator (guest, from the loopback interface)."""
    return BrokerApi(broker.management_url, "guest", "guest")


async def set_up_peer_links(settings: Settings, broker: PrivateRabbitMQ | None = None) -> None:
    """Declare this site's outbound queues on its broker (`settings.amqp_url`) and set their shovels, with rabbitmqctl
    on the local node or through `broker`'s management API; return once every shovel runs."""
    links = links_of(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(f"{settings.bus.prefix}.events", "topic", durable=True)
        for link in links:
            await link.declare_queue(channel)
    if broker is None:
        await set_shovels(links)
    else:
        await apply_links_through_api(management_api(broker), links, VHOST, settings.bus.prefix)
    await wait_for(lambda: shovels_running(links, broker), timeout_s=60, poll_s=0.3)


async def shovels_running(links: list[PeerLink], broker: PrivateRabbitMQ | None = None) -> bool:
    """Whether every one of `links`' shovels runs (on the local node, or on `broker`)."""
    states = await shovel_states(VHOST) if broker is None else await private_shovel_states(broker)
    return all(states.get(link.shovel) == "running" for link in links)


async def private_shovel_states(broker: PrivateRabbitMQ) -> dict[str, str]:
    """Each shovel's state on a private node (its rabbitmqctl: the node has no shovel management plugin)."""
    done = await asyncio.to_thread(broker._ctl, "-q", "shovel_status", "--formatter", "json", check=False)
    if done.returncode != 0:
        return {}  # the node is not up (yet): no shovel runs
    return {s["name"]: s["state"] for s in json.loads(done.stdout or b"[]") if s.get("vhost") == VHOST}


async def remove_peer_links(settings: Settings, broker: PrivateRabbitMQ | None = None) -> None:
    """Clear this site's shovels and delete their queues."""
    if broker is not None:
        await apply_links_through_api(management_api(broker), [], VHOST, settings.bus.prefix)
        return
    for link in links_of(settings):
        await clear_shovel(VHOST, link.shovel)
        await delete_queue(VHOST, link.queue)
