"""The shovels of a test site's `[[peers]]`, set up with obsflow setup's own pieces (`peer_link`, `set_shovels`),
with a short heartbeat and reconnect delay so a cut link is noticed (and a restored one used) within seconds."""

from __future__ import annotations

import aio_pika

from shared.bus.peers import PeerLink, shovel_uri
from shared.provision.shovels import clear_shovel, delete_queue, set_shovels, shovel_states
from shared.settings import Settings
from tests.conftest import wait_for
from tests.infra import backends

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


async def set_up_peer_links(settings: Settings) -> None:
    """Declare this site's outbound queues and set their shovels; return once every shovel runs."""
    links = links_of(settings)
    connection = await aio_pika.connect(backends().amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(f"{settings.bus.prefix}.events", "topic", durable=True)
        for link in links:
            await link.declare_queue(channel)
    await set_shovels(links)

    async def running() -> bool:
        states = await shovel_states(VHOST)
        return all(states.get(link.shovel) == "running" for link in links)

    await wait_for(running, timeout_s=60, poll_s=0.3)


async def remove_peer_links(settings: Settings) -> None:
    """Clear this site's shovels and delete their queues."""
    for link in links_of(settings):
        await clear_shovel(VHOST, link.shovel)
        await delete_queue(VHOST, link.queue)
