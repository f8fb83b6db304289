"""PostgreSQL advisory locks: the one derivation of a lock key from names."""

from __future__ import annotations

import hashlib


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for `parts` (e.g. "outbox", schema): stable across processes and builds."""
    digest = hashlib.blake2b(":".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
