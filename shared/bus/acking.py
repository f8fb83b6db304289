"""The one acknowledgement policy: what happens to a message after its handler ran (or failed)."""

from __future__ import annotations

import enum

from shared.failures import Failure, classify

UNKNOWN_ATTEMPTS = 3  # attempts an unknown failure gets before its message is set aside with its reason


class Disposition(enum.Enum):
    """ACK after commit; DEAD_LETTER input that can never succeed; RETRY what may succeed later, in-process."""

    ACK = "ack"
    DEAD_LETTER = "dead-letter"
    RETRY = "retry"


def after_failure(exc: BaseException, attempts: int, *, last_delivery: bool = False) -> Disposition:
    """A message's fate after `attempts` failed attempts, the last raising `exc`.

    Transient failures (the database or broker down) are waited out: RETRY however many attempts it takes, so an
    outage of minutes never dead-letters anything. Permanent ones are dead-lettered at once. Unknown ones get
    UNKNOWN_ATTEMPTS attempts, or end at once on the broker's last delivery: we dead-letter them ourselves, with their
    reason, rather than leave it to the queue's delivery limit (which records none).
    """
    failure = classify(exc)
    if failure is Failure.TRANSIENT:
        return Disposition.RETRY
    if failure is Failure.PERMANENT or last_delivery or attempts >= UNKNOWN_ATTEMPTS:
        return Disposition.DEAD_LETTER
    return Disposition.RETRY
