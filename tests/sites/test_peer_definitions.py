"""Peer links as data (pure): what crosses, the shovel's definition, the peer user's rights, the consumers' check."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.bus.peers import (
    FORWARDED_TYPES,
    outbound_queue,
    peer_link,
    peer_links,
    read_peer_passwords,
    redact_uri,
    shovel_uri,
    waiting_peers,
)
from shared.bus.publishers import publisher_refusal
from shared.errors import ConfigurationError
from shared.events import Event, new_event
from shared.events.types import FileConflicted, FileMinted, ObservationAnnounced, SessionClosed
from shared.provision.grants import peer_grants
from shared.provision.shovels import queue_of_shovel, shovel_parameters, stale_shovels
from shared.settings import PeerSettings, Settings

SECRET = "p@ss:w/rd%?#x"


def _settings(tmp_path: Path) -> Settings:
    (tmp_path / "nrao.pw").write_text(SECRET + "\n")
    nrao = PeerSettings(name="nrao", amqp_url="amqp://karoo-peer@nrao.example:5672/", bus_prefix="nbus",
                        amqp_password_file=tmp_path / "nrao.pw")
    return Settings(site="karoo", amqp_url="amqp://127.0.0.1:5672/", bus={"prefix": "kbus"}, data_dir=tmp_path,
                    peers=[nrao, PeerSettings(name="ska")])  # ska: bytes only, no broker link


def _minted(site: str, producer: str = "ingest") -> Event:
    return new_event(FileMinted(name="f.uvh5", size=1, checksum="xxh3-128:" + "0" * 32, file_type="uvh5",
                                origin_site=site, uploader="u", created_at=datetime.now(UTC)),
                     site=site, producer=producer)


def test_a_link_queues_only_the_sites_own_forwardable_events_and_shovels_them_confirmed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    (link,) = peer_links(settings, read_peer_passwords(settings))
    assert (link.queue, link.shovel) == ("kbus.to.nrao", "kbus-to-nrao")
    spec = link.queue_spec()
    assert spec.arguments == {"x-queue-type": "quorum"}  # no delivery limit: outages return deliveries
    assert {key for _exchange, key in spec.bindings} == {f"karoo.{t}.#" for t in FORWARDED_TYPES}
    assert {exchange for exchange, _key in spec.bindings} == {"kbus.events"}
    assert "observation.announced" not in FORWARDED_TYPES and "file.conflicted" in FORWARDED_TYPES
    value = link.shovel_definition()
    assert value["src-uri"] == "amqp://" and value["src-queue"] == "kbus.to.nrao"
    assert value["dest-exchange"] == "nbus.events" and value["ack-mode"] == "on-confirm"
    assert value["dest-publish-properties"] == {"user_id": "karoo-peer"}
    # The password is percent-encoded, the vhost spelled out (the broker reads a bare `/` as the vhost "").
    assert value["dest-uri"] == ("amqp://karoo-peer:p%40ss%3Aw%2Frd%25%3F%23x@nrao.example:5672/%2F?heartbeat=10")
    assert SECRET not in repr(link) and "p%40ss" not in link.described() and "***" in link.described()
    assert redact_uri(value["dest-uri"]) == "amqp://karoo-peer:***@nrao.example:5672/%2F?heartbeat=10"
    (parameter,) = shovel_parameters([link])["parameters"]
    assert (parameter["component"], parameter["name"], parameter["vhost"]) == ("shovel", "kbus-to-nrao", "/")


def test_a_sites_vhost_and_the_peers_are_kept_in_the_uris(tmp_path: Path) -> None:
    settings = _settings(tmp_path).model_copy(update={"amqp_url": "amqp://127.0.0.1:5672/karoo"})
    peer = PeerSettings(name="nrao", amqp_url="amqps://karoo-peer@h:5671/site%2Fnrao?heartbeat=3")
    link = peer_link(settings, peer, "pw")
    assert link.shovel_definition()["src-uri"] == "amqp:///karoo"
    assert link.dest_uri == "amqps://karoo-peer:pw@h:5671/site%2Fnrao?heartbeat=3"
    assert shovel_uri("amqp://u@h") == "amqp://u@h/%2F?heartbeat=10"


def test_a_peer_without_its_password_waits_and_an_unusable_password_file_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.peers[0].amqp_password_file = None
    with pytest.raises(ConfigurationError, match="amqp_password_file"):
        read_peer_passwords(settings)
    settings.peers[0].amqp_password_file = tmp_path / "not-handed-over-yet"
    assert read_peer_passwords(settings) == {}
    assert [p.name for p in waiting_peers(settings, {})] == ["nrao"]  # ska has no broker link: it waits for nothing
    assert outbound_queue(settings, "nrao").name == "kbus.to.nrao"  # its events queue up meanwhile
    (tmp_path / "empty").write_text("\n")
    settings.peers[0].amqp_password_file = tmp_path / "empty"
    with pytest.raises(ConfigurationError, match="is empty"):
        read_peer_passwords(settings)
    settings.peers[0].amqp_password_file = tmp_path
    with pytest.raises(ConfigurationError, match="cannot read peer 'nrao'"):
        read_peer_passwords(settings)


def test_set_up_removes_only_its_own_shovels_of_peers_no_longer_declared(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    links = peer_links(settings, read_peer_passwords(settings))
    existing = ["kbus-to-nrao", "kbus-to-old", "other-to-old", "kbus-tools", "kbus-nrao-to-x"]
    assert stale_shovels(existing, "kbus", links) == ["kbus-to-old"]
    assert queue_of_shovel("kbus", "kbus-to-old") == "kbus.to.old"


def test_a_peer_user_may_write_only_its_sites_forwardable_keys_on_the_events_exchange() -> None:
    (grant,) = peer_grants("nbus", ["karoo"])
    assert (grant.user, grant.configure, grant.read) == ("karoo-peer", "^$", "^$")
    assert re.match(grant.write, "nbus.events") and not re.match(grant.write, "nbus.control")
    ((exchange, write, read),) = grant.topics
    assert exchange == "nbus.events" and read == "^$"
    for key in ("karoo.file.minted.uvh5", "karoo.instance.created", "karoo.session.closed", "karoo.file.conflicted"):
        assert re.match(write, key), key
    for key in ("karoo.observation.announced.uvh5", "nrao.file.minted.uvh5", "karoo.job.done.X", "karoox.file.minted"):
        assert not re.match(write, key), key


def test_consumers_accept_a_peers_own_forwardable_events_from_its_link_user_and_nothing_else() -> None:
    assert publisher_refusal(_minted("karoo"), "karoo-peer") is None
    conflicted = new_event(FileConflicted(
        name="f", kept_site="karoo", kept_checksum="xxh3-128:00", kept_size=1, other_site="nrao",
        other_checksum="xxh3-128:11", other_size=2, other_event_id=uuid.uuid4()), site="karoo", producer="catalog")
    assert publisher_refusal(conflicted, "karoo-peer") is None
    closed = new_event(SessionClosed(session_id="s", start_jd=1.0, end_jd=2.0, file_names=[]), site="karoo",
                       producer="catalog")
    assert publisher_refusal(closed, "karoo-peer") is None
    third = publisher_refusal(_minted("ska"), "karoo-peer")
    assert third and "a peer sends only its own events" in third and "'ska'" in third
    announced = new_event(ObservationAnnounced(path="/x", file_type="uvh5"), site="karoo", producer="correlator")
    refusal = publisher_refusal(announced, "karoo-peer")
    assert refusal and refusal.startswith("publisher not allowed") and "observation.announced" in refusal
    forged = publisher_refusal(_minted("karoo", producer="scheduler"), "karoo-peer")
    assert forged and "claiming producer 'scheduler'" in forged
    # The site's own users are checked as before; a peer user is not one of them.
    assert publisher_refusal(_minted("karoo"), "karoo-ingest") is None
    assert publisher_refusal(_minted("karoo"), "-peer") is not None
