"""The ingest service's settings: the `[services.ingest]` table of the config file, checked once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import ConfigurationError

TiB = 1024**4


@dataclass(frozen=True)
class IngestOptions:
    """Limits and timings of the ingest service."""

    max_file_bytes: int = TiB
    upload_expiry_s: float = 24 * 3600.0
    expiry_interval_s: float = 60.0
    usage_refresh_s: float = 30.0
    prefetch: int = 64  # announcements in flight per process: they are handled in batches of what is waiting
    copy_threads: int = 4  # threads a batch's copies are shared between
    direct_io: bool = True  # write staged bytes with O_DIRECT (off: through the page cache, for odd filesystems)
    source_roots: tuple[str, ...] = ()  # empty: announcements may name any absolute path
    body_read_timeout_s: float = 30.0  # an upload body's read that waits longer lets an idle client go


_NUMBERS = {"max_file_bytes": int, "upload_expiry_s": float, "expiry_interval_s": float,
            "usage_refresh_s": float, "prefetch": int, "copy_threads": int, "body_read_timeout_s": float}


def ingest_options(raw: dict[str, Any]) -> IngestOptions:
    """Parse and check `[services.ingest]`; ConfigurationError names the bad key."""
    unknown = set(raw) - set(_NUMBERS) - {"source_roots", "direct_io"}
    if unknown:
        known = sorted([*_NUMBERS, "source_roots", "direct_io"])
        raise ConfigurationError(f"unknown [services.ingest] keys {sorted(unknown)}; known are {known}")
    values: dict[str, Any] = {}
    for key, kind in _NUMBERS.items():
        if key in raw:
            try:
                value = kind(raw[key])
            except (TypeError, ValueError) as e:
                raise ConfigurationError(f"[services.ingest] {key} must be a number, got {raw[key]!r}") from e
            if value <= 0:
                raise ConfigurationError(f"[services.ingest] {key} must be positive, got {value}")
            values[key] = value
    roots = raw.get("source_roots", [])
    if not isinstance(roots, list | tuple) or not all(isinstance(r, str) and r.startswith("/") for r in roots):
        raise ConfigurationError("[services.ingest] source_roots must be a list of absolute directory paths")
    direct_io = raw.get("direct_io", True)
    if not isinstance(direct_io, bool):
        raise ConfigurationError(f"[services.ingest] direct_io must be true or false, got {direct_io!r}")
    return IngestOptions(**values, source_roots=tuple(roots), direct_io=direct_io)
