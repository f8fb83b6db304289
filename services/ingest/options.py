"""The ingest service's settings: the `[services.ingest]` table of the config file, checked once at start-up."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigurationError
from shared.safe_paths import UnsafeRoot, check_root

TiB = 1024**4
# Kernel views of processes and devices: a root there would hand out /proc/<pid>/environ and the like.
_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


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
    source_roots: tuple[str, ...] = ()  # where announcements and local-path uploads may read; empty: nowhere


def default_source_root(data_dir: str | os.PathLike[str]) -> Path:
    """Where a site without `source_roots` ingests local paths from: `<data_dir>/incoming`."""
    return Path(data_dir).resolve() / "incoming"


_NUMBERS = {"max_file_bytes": int, "upload_expiry_s": float, "expiry_interval_s": float,
            "usage_refresh_s": float, "prefetch": int, "copy_threads": int}


def ingest_options(
    raw: dict[str, Any], *, data_dir: str | os.PathLike[str] | None = None, store_roots: Sequence[Path] = ()
) -> IngestOptions:
    """Parse and check `[services.ingest]`; ConfigurationError names the bad key.

    Without `source_roots`, local paths are read from `default_source_root(data_dir)` only (from nowhere when no
    data directory is given); `source_roots = []` closes local-path ingest altogether.
    """
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
    if "source_roots" in raw:
        roots = _source_roots(raw["source_roots"], data_dir, store_roots)
    else:
        roots = (str(default_source_root(data_dir)),) if data_dir is not None else ()
    direct_io = raw.get("direct_io", True)
    if not isinstance(direct_io, bool):
        raise ConfigurationError(f"[services.ingest] direct_io must be true or false, got {direct_io!r}")
    return IngestOptions(**values, source_roots=roots, direct_io=direct_io)


def _source_roots(
    roots: Any, data_dir: str | os.PathLike[str] | None, store_roots: Sequence[Path]
) -> tuple[str, ...]:
    """The configured roots, each an absolute directory that exposes neither the server's secrets nor a store."""
    if not isinstance(roots, list | tuple) or not all(isinstance(r, str) for r in roots):
        raise ConfigurationError("[services.ingest] source_roots must be a list of absolute directory paths")
    checked: list[str] = []
    for root in roots:
        try:
            path = check_root(root)
        except UnsafeRoot as e:
            raise ConfigurationError(f"[services.ingest] source_roots: {e}") from e
        _refuse_exposing(str(root), path, data_dir, store_roots)
        checked.append(str(path))
    return tuple(checked)


def _refuse_exposing(
    root: str, path: Path, data_dir: str | os.PathLike[str] | None, store_roots: Sequence[Path]
) -> None:
    # Compared as written and as resolved: a root reached through a symlink exposes what its target holds.
    for form in dict.fromkeys((path, Path(os.path.realpath(path)))):
        for pseudo in _PSEUDO_FILESYSTEMS:
            if _within(form, Path(pseudo)):
                raise ConfigurationError(f"[services.ingest] source_roots: {root} is in {pseudo}, which exposes the "
                                         "server's processes and devices; name the directories instruments write to")
        if data_dir is not None and _within(Path(data_dir).resolve(), form):
            raise ConfigurationError(f"[services.ingest] source_roots: {root} contains the data directory "
                                     f"{data_dir} (the auth secret, the stores); name the directories instruments "
                                     "write to, e.g. its 'incoming' subdirectory")
        for store in store_roots:
            if _within(form, Path(store)) or _within(Path(store), form):
                raise ConfigurationError(f"[services.ingest] source_roots: {root} overlaps the store root {store}; "
                                         "a store's staging and main areas are never a source")


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
