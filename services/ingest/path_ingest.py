"""Ingest from a path this server can read: the announced-observation way in and the local-path upload."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from services.ingest.digest import TreeRefused
from services.ingest.ingester import Ingester, Minted, Outcome, Provenance, Transaction, algorithms_for
from services.ingest.minting import (
    AlreadyMinted,
    Claim,
    Refusal,
    RefusalCode,
    check_claim,
    check_size,
    check_source_path,
    decide_before_copy,
)
from services.ingest.onepass import MD5
from services.ingest.repository import find_file
from shared.bus import Once


def default_name(path: str) -> str:
    """The file name an announcement without one gets: the last component of its path."""
    return os.path.basename(os.path.normpath(path)) if path else ""


def _probe_source(path: Path) -> tuple[bool, int] | Refusal:
    """(is a directory, size of a regular file) or why the path cannot be ingested."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return Refusal(RefusalCode.NOT_FOUND, f"nothing exists at {path}; check the path and that this host "
                       "mounts the filesystem it is on")
    except (PermissionError, NotADirectoryError) as e:
        return Refusal(RefusalCode.INVALID_PATH, f"cannot read {path}: {e.strerror}")
    if stat.S_ISDIR(info.st_mode):
        readable = os.access(path, os.R_OK | os.X_OK)
    elif stat.S_ISREG(info.st_mode):
        readable = os.access(path, os.R_OK)
    else:
        return Refusal(RefusalCode.INVALID_PATH, f"{path} is neither a regular file nor a directory")
    if not readable:
        return Refusal(RefusalCode.INVALID_PATH, f"the ingest service may not read {path}; fix its permissions")
    return stat.S_ISDIR(info.st_mode), (0 if stat.S_ISDIR(info.st_mode) else info.st_size)


async def _precheck(ingester: Ingester, claim: Claim, source: str) -> Refusal | tuple[bool, int]:
    max_bytes = ingester.options.max_file_bytes
    refusal = check_claim(claim, max_bytes) or check_source_path(source, ingester.options.source_roots)
    if refusal is not None:
        return refusal
    probe = await asyncio.to_thread(_probe_source, Path(source))
    if isinstance(probe, Refusal):
        return probe
    is_directory, size = probe
    if is_directory and claim.algorithm == MD5:
        return Refusal(RefusalCode.INVALID_CHECKSUM, f"{claim.name} is a directory: its checksum is the "
                       "xxh3-128 tree digest (`obsflow upload` computes it); md5 applies to single files only")
    if not is_directory:
        refusal = check_size(size, max_bytes)
        if refusal is None and claim.size is not None and claim.size != size:
            refusal = Refusal(RefusalCode.SIZE_MISMATCH, f"{claim.name}: announced {claim.size} bytes but "
                              f"{source} holds {size}; announce it again once it is complete")
    return refusal or probe


async def ingest_path(
    ingester: Ingester, tx: Transaction, claim: Claim, source: str, upload_id: str, who: Provenance,
    *, want_md5: bool = False, once: Once | None = None,
) -> Outcome:
    """Copy `source` into a store in one pass, verify it against the claim, and mint it (or refuse).

    A work handler passes `tx=once.transaction` and its `once` (the mint records the event as handled).
    """
    checked = await _precheck(ingester, claim, source)

    async def refuse(refusal: Refusal) -> Refusal:
        return await ingester.refuse(tx, refusal, name=claim.name, path=source, caused_by=who.caused_by)

    if isinstance(checked, Refusal):
        return await refuse(checked)
    verdict = decide_before_copy(claim, await find_file(ingester.pool, claim.name))
    if isinstance(verdict, AlreadyMinted):
        async with tx():
            pass  # nothing changes; a work handler's transaction still records the event as handled
        return Minted(claim.name, created=False)
    if isinstance(verdict, Refusal):
        return await refuse(verdict)
    store = ingester.choose_store(claim.size if claim.size is not None else checked[1])
    if isinstance(store, Refusal):
        return await refuse(store)
    async with ingester.locks.hold(upload_id):
        try:
            staged = await ingester.stage_copy(Path(source), store, upload_id, algorithms_for(claim, want_md5))
        except FileNotFoundError as e:
            return await refuse(Refusal(RefusalCode.NOT_FOUND, f"{source} vanished while it was copied: {e}"))
        except (PermissionError, TreeRefused) as e:
            return await refuse(Refusal(RefusalCode.INVALID_PATH, str(e)))
        return await ingester.commit_staged(tx, claim, staged, who, once)
