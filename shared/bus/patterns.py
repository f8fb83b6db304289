"""AMQP topic-pattern matching, for filtering the log stream the way a bound queue would."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=256)
def _words(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("."))


def topic_matches(pattern: str, routing_key: str) -> bool:
    """True if `routing_key` matches `pattern` (`*` is one word, `#` zero or more), as RabbitMQ decides."""
    return _match(_words(pattern), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return (head == "*" or head == key[0]) and _match(rest, key[1:])
