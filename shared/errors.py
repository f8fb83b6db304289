"""The small tree of obsflow errors: everything a user or an operator can see is one of these."""

from __future__ import annotations


class ObsflowError(Exception):
    """Base of every error obsflow raises on purpose; its message says what was wrong and what to do."""


class PermanentError(ObsflowError):
    """Input that can never succeed, however often it is retried (dead-lettered, never requeued)."""


class TransientError(ObsflowError):
    """A failure of the infrastructure that goes away by itself (a database or broker restart): waited out with
    backoff, never held against the work (see shared/failures.py)."""


class MalformedEvent(PermanentError):
    """A message on the bus that is not a valid obsflow event."""


class UnknownEventType(MalformedEvent):
    """An event whose type or version this build does not know."""


class ConfigurationError(ObsflowError):
    """Settings that cannot work; the message names the setting and the fix."""


class DatabaseUnavailable(TransientError):
    """PostgreSQL could not be reached or dropped the connection."""


class BrokerUnavailable(TransientError):
    """RabbitMQ could not be reached or closed the channel."""


class StorageUnavailable(TransientError):
    """A file system that background upkeep works on failed (unmounted, an I/O error): tried again later."""
