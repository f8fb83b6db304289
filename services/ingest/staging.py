"""A store's staging area: where bytes land before they are verified, and the atomic commit into main.

Each upload or copy in progress is one entry ``<root>/staging/<upload_id>`` (a file, or a directory for
directory files). A commit is one ``rename`` into ``<root>/main/<name>`` that never replaces an existing
name, followed by an fsync of the directories involved: a file is either fully in main or not at all.
After a crash, whatever is left in staging and unknown to the service is swept away at start-up.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import stat
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import structlog

from services.ingest.names import PathOutsideStore, safe_join
from services.ingest.onepass import fsync_directory
from services.ingest.stores import MAIN_DIR_NAME, STAGING_DIR_NAME

log = structlog.get_logger()

_UPLOAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


class AlreadyInStore(FileExistsError):
    """A commit would replace a file already in the store's main area; minted files are immutable."""


class InvalidUploadId(ValueError):
    """An upload id is not usable as a staging entry name."""


@functools.cache
def _renameat2() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(libc, "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


def rename_no_replace(src: Path, dst: Path) -> None:
    """Atomically rename src to dst, raising AlreadyInStore if dst exists (renameat2 RENAME_NOREPLACE)."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        error = ctypes.get_errno()
        if error == errno.EEXIST:
            raise AlreadyInStore(f"{dst} already exists; a minted file is never replaced")
        if error not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(error, os.strerror(error), str(src), None, str(dst))
    # This filesystem cannot refuse atomically; check first (a race remains, the catalogue's unique
    # name constraint is the second line of defence).
    if os.path.lexists(dst):
        raise AlreadyInStore(f"{dst} already exists; a minted file is never replaced")
    os.rename(src, dst)


def _newest_mtime(path: Path) -> float:
    info = os.lstat(path)
    newest = info.st_mtime
    if stat.S_ISDIR(info.st_mode):
        for parent, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
    return newest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class StagingArea:
    """The staging and main areas of one store (``<store_root>/staging`` and ``<store_root>/main``)."""

    def __init__(self, store_root: Path) -> None:
        self.root = Path(store_root)
        self.staging_dir = self.root / STAGING_DIR_NAME
        self.main_dir = self.root / MAIN_DIR_NAME
        self._unsynced_directories: set[Path] = set()

    def ensure_layout(self) -> None:
        """Create the staging and main directories if they are missing."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.main_dir.mkdir(exist_ok=True)

    def new_upload(self, upload_id: str) -> Path:
        """The staging path for upload_id (not created); a leftover of an earlier attempt is removed."""
        if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
            raise InvalidUploadId(
                f"invalid upload id {upload_id!r}: use 1-128 of A-Z a-z 0-9 '_' '-', starting with a "
                "letter or digit (a UUID works)"
            )
        path = self.staging_dir / upload_id
        if os.path.lexists(path):
            log.warning("stale_staged_upload_removed", path=str(path), upload_id=upload_id)
            _remove(path)
        return path

    def _require_staged(self, path: Path) -> Path:
        staged = Path(path)
        if staged.parent.resolve() != self.staging_dir.resolve() or staged.name in ("", ".", ".."):
            raise PathOutsideStore(
                f"{staged} is not an entry of the staging area {self.staging_dir}; only staged uploads "
                "can be committed or discarded"
            )
        return staged

    def commit(self, staged_path: Path, final_relative_name: str, *, sync: bool = True) -> Path:
        """Atomically move a staged file or tree to ``main/<final_relative_name>``; never overwrites.

        With sync=False the directory fsyncs are deferred to the next ``sync()`` (batching many commits).
        """
        staged = self._require_staged(staged_path)
        final = safe_join(self.main_dir, final_relative_name)
        if not os.path.lexists(staged):
            raise FileNotFoundError(f"nothing staged at {staged}: it was discarded, expired or never written")
        self._make_parents(final)
        rename_no_replace(staged, final)
        self._unsynced_directories.update((final.parent, staged.parent))
        if sync:
            self.sync()
        log.info("staged_upload_committed", staged=str(staged), final=str(final))
        return final

    def _make_parents(self, final: Path) -> None:
        missing = []
        parent = final.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir(exist_ok=True)
            self._unsynced_directories.update((directory, directory.parent))

    def sync(self) -> None:
        """fsync every directory changed by commits since the last sync (makes them crash-proof)."""
        while self._unsynced_directories:
            fsync_directory(self._unsynced_directories.pop())

    def discard(self, path: Path) -> None:
        """Remove a staged file or tree (a failed or refused upload); nothing there is fine."""
        staged = self._require_staged(path)
        if os.path.lexists(staged):
            _remove(staged)
            log.info("staged_upload_discarded", path=str(staged))

    def staged_entries(self) -> list[Path]:
        """Every entry currently in the staging area."""
        if not self.staging_dir.is_dir():
            return []
        return sorted(self.staging_dir.iterdir())

    def expire(self, older_than_s: float, now: float | None = None) -> list[Path]:
        """Remove staged entries untouched (newest mtime in the entry) for older_than_s; return them."""
        cutoff = (time.time() if now is None else now) - older_than_s
        expired = []
        for entry in self.staged_entries():
            if _newest_mtime(entry) < cutoff:
                _remove(entry)
                expired.append(entry)
                log.info("staged_upload_expired", path=str(entry), older_than_s=older_than_s)
        if expired:
            fsync_directory(self.staging_dir)
        return expired

    def sweep_orphans(self, known_upload_ids: Collection[str]) -> list[Path]:
        """Remove staged entries whose upload id the service does not know (crash recovery); return them."""
        known = set(known_upload_ids)
        orphans = [entry for entry in self.staged_entries() if entry.name not in known]
        for orphan in orphans:
            _remove(orphan)
            log.info("staged_orphan_removed", path=str(orphan))
        if orphans:
            fsync_directory(self.staging_dir)
        return orphans
