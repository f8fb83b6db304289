"""Payload base class, the registry of event types and the upcaster chain from old versions to current."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from shared.errors import UnknownEventType

_DETAIL_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class Payload(BaseModel):
    """The typed body of an event; subclasses set `event_type` ("subject.verb") and `version`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    # Who may publish it: services by name, or "instrument" (a correlator announcing observations). The broker's
    # topic permissions and the consumers' check of each message's user id are both derived from this.
    producers: ClassVar[tuple[str, ...]] = ()

    def routing_detail(self) -> str | None:
        """The optional fourth routing-key word (a file type, an action name) that topic patterns select on."""
        return None


def routing_word(text: str) -> str:
    """Make `text` safe as one word of a topic routing key (no dots, no wildcards)."""
    return _DETAIL_UNSAFE.sub("_", text) or "_"


P = TypeVar("P", bound=type[Payload])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_TYPES: dict[str, type[Payload]] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def event_payload(cls: P) -> P:
    """Class decorator: register a payload type under its `event_type`."""
    subject_verb = cls.event_type.split(".")
    if len(subject_verb) != 2 or not all(subject_verb):
        raise ValueError(f"event type {cls.event_type!r} must read 'subject.verb'")
    if not cls.producers:
        raise ValueError(f"event type {cls.event_type!r} must name its producers")
    if cls.event_type in _TYPES:
        raise ValueError(f"event type {cls.event_type!r} is registered twice")
    _TYPES[cls.event_type] = cls
    return cls


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Decorator: register the function that turns version `from_version` of a payload into the next one."""

    def register(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


def payload_type(event_type: str) -> type[Payload]:
    """The current payload class of `event_type`."""
    try:
        return _TYPES[event_type]
    except KeyError:
        raise UnknownEventType(f"unknown event type {event_type!r}; known: {', '.join(sorted(_TYPES))}") from None


def registered_types() -> dict[str, type[Payload]]:
    """Every registered event type with its payload class."""
    return dict(_TYPES)


def upcast(event_type: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored payload of `version` up to the current version of its type, one step at a time."""
    current = payload_type(event_type).version
    if version > current:
        raise UnknownEventType(
            f"{event_type} version {version} is newer than this build knows ({current}); upgrade obsflow"
        )
    while version < current:
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            raise UnknownEventType(f"no upcaster from {event_type} version {version} to {version + 1}")
        payload = step(dict(payload))
        version += 1
    return payload
