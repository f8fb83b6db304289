"""Removing a successful run's temporary products: files in its work directory matching declared patterns.

Safety first: patterns are relative and have no '..'; a match whose real location is outside the work
directory or under a store root is left alone (a symlink itself is removed, never what it points to).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import structlog

from services.scheduler.runs.options import check_cleanup_pattern

log = structlog.get_logger()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def remove_temporary_products(workdir: str | Path, patterns: Sequence[str], store_roots: Sequence[Path]) -> list[str]:
    """Delete what `patterns` match under `workdir`; return the removed paths (relative to workdir)."""
    if not patterns:
        return []
    root = Path(workdir).resolve()
    stores = [Path(s).resolve() for s in store_roots]
    if any(_inside(root, store) or _inside(store, root) for store in stores):
        log.error("cleanup_refused", workdir=str(root), reason="the work directory overlaps a store root")
        return []
    removed: list[str] = []
    for pattern in patterns:
        check_cleanup_pattern(pattern)
        for match in sorted(Path(workdir).glob(pattern)):
            # The link's own location must be in the workdir; a real file's location must be too.
            location = match.parent.resolve() / match.name if match.is_symlink() else match.resolve()
            if not _inside(location, root) or location == root or any(_inside(location, s) for s in stores):
                log.warning("cleanup_skipped", path=str(match), reason="outside the work directory or in a store")
                continue
            if match.is_dir() and not match.is_symlink():
                shutil.rmtree(match)
            else:
                match.unlink(missing_ok=True)
            removed.append(os.path.relpath(location, root))
    if removed:
        log.info("temporary_products_removed", workdir=str(root), files=len(removed))
    return removed
