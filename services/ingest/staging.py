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
from pathlib import Path
from typing import Any

import structlog

from services.ingest.names import PathOutsideStore, safe_join
from services.ingest.onepass import fsync_directory
from services.ingest.stores import MAIN_DIR_NAME, STAGING_DIR_NAME
from shared.errors import ConfigurationError
from shared.safe_paths import MissingRoot, UnsafePath, check_root, list_beneath, relative_parts, remove_beneath

log = structlog.get_logger()

_UPLOAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


class AlreadyInStore(FileExistsError):
    """A commit would replace a file already in the store's main area; minted files are immutable."""


class InvalidUploadId(ValueError):
    """An upload id is not usable as a staging entry name."""


class UnsafeStore(ConfigurationError):
    """A store's staging or main area cannot be reached beneath its root without following a link."""


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


class StagingArea:
    """The staging and main areas of one store (``<store_root>/staging`` and ``<store_root>/main``)."""

    def __init__(self, store_root: Path) -> None:
        # A store root that is empty, '/' or relative is refused here, before anything is written or removed.
        self.root = check_root(store_root)
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
        if self._remove_staged(upload_id):
            log.warning("stale_staged_upload_removed", path=str(path), upload_id=upload_id)
        return path

    def _remove_staged(self, name: str) -> bool:
        """Remove `staging/<name>` beneath the store root, following no link (a link itself is removed)."""
        return self._remove(f"{STAGING_DIR_NAME}/{name}")

    def _remove(self, relative: str) -> bool:
        try:
            return remove_beneath(self.root, relative, [self.root])
        except UnsafePath as e:
            # The store's own layout is wrong (e.g. staging/ is a link elsewhere): an operator's problem, not the
            # upload's, so it is never reported as a refusal of what was being ingested.
            raise UnsafeStore(f"store {self.root}: refusing to remove {relative}: {e}; make the store's "
                              f"{STAGING_DIR_NAME}/ and {MAIN_DIR_NAME}/ real directories on its own disk") from e

    def _require_staged(self, path: Path) -> Path:
        staged = Path(path)
        if staged.parent != self.staging_dir or staged.name in ("", ".", ".."):
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
        """Remove a staged file or tree (a failed or refused upload); nothing there is fine.

        Only `staging/<entry>` beneath the store root is removed, resolved without following a link: a link
        there is removed itself, never what it points to (shared/safe_paths.py).
        """
        staged = self._require_staged(path)
        if self._remove_staged(staged.name):
            log.info("staged_upload_discarded", path=str(staged))

    def remove_unminted(self, name: str) -> bool:
        """Remove `main/<name>` left by a commit whose transaction never committed; False if nothing was there."""
        if not relative_parts(name):  # '' or '.' would name main itself
            raise PathOutsideStore(f"{name!r} names no file in {self.main_dir}")
        return self._remove(f"{MAIN_DIR_NAME}/{name}")

    def staged_entries(self) -> list[Path]:
        """Every entry currently in the staging area (listed beneath the store root, never through a link)."""
        try:
            return [self.staging_dir / entry.relative for entry in list_beneath(self.root, STAGING_DIR_NAME)]
        except (FileNotFoundError, MissingRoot):
            return []  # no staging area (a disabled store, a disk not mounted): nothing staged there
        except UnsafePath as e:
            raise UnsafeStore(f"store {self.root}: cannot list {STAGING_DIR_NAME}/: {e}; make it a real "
                              "directory on the store's disk") from e
