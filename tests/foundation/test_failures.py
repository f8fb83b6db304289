"""The one error classifier: what each kind of failure means for the work that raised it."""

from __future__ import annotations

import errno
import socket

import aiormq
import asyncpg
import pydantic
import pytest

from shared.bounded_json import JsonRefused
from shared.bus.acking import UNKNOWN_ATTEMPTS, Disposition, after_failure
from shared.bus.messages import Unroutable
from shared.bus.topology import not_found
from shared.errors import BrokerUnavailable, ConfigurationError, DatabaseUnavailable, MalformedEvent, StorageUnavailable
from shared.failures import Failure, classify, translate_db_errors, translate_storage_errors


class _Model(pydantic.BaseModel):
    size: int


def _validation_error() -> pydantic.ValidationError:
    try:
        _Model.model_validate({"size": "many"})
    except pydantic.ValidationError as e:
        return e
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        # The infrastructure: waited out, however long it takes.
        (asyncpg.CannotConnectNowError("the database system is shutting down"), Failure.TRANSIENT),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), Failure.TRANSIENT),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), Failure.TRANSIENT),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), Failure.TRANSIENT),
        (asyncpg.SerializationError("could not serialize access"), Failure.TRANSIENT),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), Failure.TRANSIENT),
        (aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure"),
         Failure.TRANSIENT),
        (aiormq.exceptions.ChannelInvalidStateError("channel closed"), Failure.TRANSIENT),
        (Unroutable("no route yet"), Failure.TRANSIENT),
        (socket.gaierror(-3, "Temporary failure in name resolution"), Failure.TRANSIENT),
        (TimeoutError(), Failure.TRANSIENT),
        # Just after a broker restart: a queue whose process is not up yet, a connection that died under its caller.
        (aiormq.exceptions.ChannelNotFoundEntity(
            404, "NOT_FOUND - home node 'rabbit@h' of durable queue 'obsflow.ingest.announced' in vhost '/' is down"
            " or inaccessible"), Failure.TRANSIENT),
        (aiormq.exceptions.ChannelNotFoundEntity(
            404, "NOT_FOUND - queue 'obsflow.log' in vhost '/' process is stopped by supervisor"), Failure.TRANSIENT),
        (RuntimeError('<Connection: "amqp://ingest:******@127.0.0.1:5672/" at 0x7f62d3d80ff0> closed'),
         Failure.TRANSIENT),
        (RuntimeError("Connection was not opened"), Failure.TRANSIENT),
        # A pooled connection whose server is shutting down (found by make chaos: an outbox relay died of it).
        (asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
         Failure.TRANSIENT),
        # The input: set aside at once.
        (MalformedEvent("event lacks payload"), Failure.PERMANENT),
        (_validation_error(), Failure.PERMANENT),
        (JsonRefused("the body is nested 40 levels deep"), Failure.PERMANENT),
        (asyncpg.UniqueViolationError("duplicate key"), Failure.PERMANENT),
        (asyncpg.NumericValueOutOfRangeError("value out of range"), Failure.PERMANENT),
        (OSError(errno.ENAMETOOLONG, "File name too long"), Failure.PERMANENT),  # the 16 MiB path of item 11
        # Neither known: a few attempts.
        (KeyError("observation_id"), Failure.UNKNOWN),
        (RuntimeError("dictionary changed size during iteration"), Failure.UNKNOWN),  # a bug, not an outage
        (asyncpg.InternalClientError("cannot switch to state 12; another operation (11) is in progress"),
         Failure.UNKNOWN),  # two coroutines on one connection: a bug
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), Failure.UNKNOWN),
        (PermissionError(errno.EACCES, "Permission denied"), Failure.UNKNOWN),
        (asyncpg.UndefinedTableError('relation "files" does not exist'), Failure.UNKNOWN),
        (aiormq.exceptions.ChannelAccessRefused(403, "ACCESS_REFUSED"), Failure.UNKNOWN),  # waiting fixes no permission
        (aiormq.exceptions.ChannelNotFoundEntity(404, "NOT_FOUND - no queue"), Failure.UNKNOWN),
    ],
    ids=lambda value: value.__class__.__name__ if isinstance(value, BaseException) else None,
)
def test_every_failure_has_one_meaning(error: BaseException, failure: Failure) -> None:
    assert classify(error) is failure


def test_the_ack_policy_waits_out_outages_sets_input_aside_and_bounds_the_unknown() -> None:
    outage, bad, bug = DatabaseUnavailable("down"), MalformedEvent("bad"), KeyError("bug")
    assert after_failure(outage, 1000) is Disposition.RETRY  # however many attempts: never dead-lettered for it
    assert after_failure(outage, 1, last_delivery=True) is Disposition.RETRY
    assert after_failure(bad, 1) is Disposition.DEAD_LETTER
    assert [after_failure(bug, n) for n in range(1, UNKNOWN_ATTEMPTS + 1)] == [Disposition.RETRY] * (
        UNKNOWN_ATTEMPTS - 1) + [Disposition.DEAD_LETTER]
    assert after_failure(bug, 1, last_delivery=True) is Disposition.DEAD_LETTER  # ours, before the broker's limit


def test_driver_errors_are_translated_at_the_edge() -> None:
    with pytest.raises(DatabaseUnavailable, match="CannotConnectNowError: starting up") as caught, \
            translate_db_errors():
        raise asyncpg.CannotConnectNowError("starting up")
    assert isinstance(caught.value.__cause__, asyncpg.CannotConnectNowError)
    with pytest.raises(KeyError), translate_db_errors():
        raise KeyError("not a database failure: left alone")
    with pytest.raises(StorageUnavailable, match="measuring the stores: PermissionError"), \
            translate_storage_errors("measuring the stores"):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_site_queue_not_up_yet_is_an_outage_not_a_missing_set_up() -> None:
    # Found by `make chaos`: a service starting just after a broker restart exited with "the site's queue 'x.log' does
    # not exist on the broker; run `obsflow setup`" while the stream's process was only not up yet.
    booting = aiormq.exceptions.ChannelNotFoundEntity(
        404, "NOT_FOUND - queue 'karoo.log' in vhost '/' process is stopped by supervisor")
    assert isinstance(not_found("queue", "karoo.log", booting), BrokerUnavailable)
    assert "not up yet" in str(not_found("queue", "karoo.log", booting))
    missing = aiormq.exceptions.ChannelNotFoundEntity(404, "NOT_FOUND - no queue 'karoo.log' in vhost '/'")
    refusal = not_found("queue", "karoo.log", missing)
    assert isinstance(refusal, ConfigurationError) and "run `obsflow setup`" in str(refusal)
