"""Removing a successful run's temporary products: files in its work directory matching declared patterns.

Safety first. The work directories' root is the configured one (`<data_dir>/scheduler`): nothing is removed when
that root is empty, `/`, relative or another directory, when the run's work directory is not strictly beneath it,
or when it overlaps a store root. The run's tree is walked beneath the root without following any symlink
(`shared/safe_paths.py`): a match that is a link is removed itself, never what it points to, and nothing behind
a symlinked directory is ever seen, let alone removed. Patterns are relative and have no '..'.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path

import structlog

from services.scheduler.runs.options import check_cleanup_pattern
from shared.safe_paths import (
    UnsafePath,
    UnsafeRoot,
    check_root,
    relative_parts,
    remove_beneath,
    split_beneath,
    walk_beneath,
)

log = structlog.get_logger()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _run_directory(root: Path, workdir: str | Path) -> str:
    """The run's work directory relative to the root; UnsafePath unless it lies strictly beneath it."""
    beneath = split_beneath(os.fspath(workdir), [str(root)])
    if beneath is None:
        raise UnsafePath(f"the work directory {os.fspath(workdir)[:300]!r} is not beneath the configured root {root}")
    return "/".join(relative_parts(beneath.relative))


def _pattern_parts(pattern: str) -> list[str]:
    check_cleanup_pattern(pattern)
    return [part for part in pattern.split("/") if part not in ("", ".")]


def _matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """pathlib's glob rules on components: `*` and friends within one name, `**` for any number of directories."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _overlaps_a_store(run: Path, store_roots: Sequence[Path]) -> bool:
    real = Path(os.path.realpath(run))
    for store in store_roots:
        real_store = Path(os.path.realpath(store))
        if _inside(real, real_store) or _inside(real_store, real):
            return True
    return False


def remove_temporary_products(
    workdir_root: str | Path, workdir: str | Path, patterns: Sequence[str], store_roots: Sequence[Path]
) -> list[str]:
    """Delete what `patterns` match in the run's `workdir` beneath the configured `workdir_root`; return them.

    The returned paths are relative to the work directory. A refusal removes nothing and is logged as an error.
    """
    if not patterns:
        return []
    matchers = [_pattern_parts(pattern) for pattern in patterns]
    try:
        root = check_root(workdir_root)
        run = _run_directory(root, workdir)
        if _overlaps_a_store(root / run, store_roots):
            raise UnsafePath(f"the work directory {root / run} overlaps a store root")
        entries = list(walk_beneath(root, run))
    except (UnsafeRoot, UnsafePath, FileNotFoundError, NotADirectoryError) as e:
        log.error("cleanup_refused", workdir=str(workdir), reason=str(e))
        return []
    removed: list[str] = []
    gone: set[str] = set()
    for entry in entries:  # parents come before their children
        parent = entry.relative.rpartition("/")[0]
        if parent in gone:
            gone.add(entry.relative)  # removed with its directory
            continue
        if not any(_matches(entry.relative.split("/"), matcher) for matcher in matchers):
            continue
        try:
            remove_beneath(root, f"{run}/{entry.relative}", [root])
        except (OSError, UnsafePath) as e:  # it changed under us (became a link, lost its permissions)
            log.warning("cleanup_skipped", path=f"{run}/{entry.relative}", reason=str(e))
            continue
        gone.add(entry.relative)
        removed.append(entry.relative)
    if removed:
        log.info("temporary_products_removed", workdir=str(root / run), files=len(removed))
    return removed
