"""The minting decision, pure: given a claim, what was measured and what exists → mint, return, or refuse.

Nothing here touches a disk, a database or the bus; the service feeds in plain values and acts on the verdict.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from services.ingest.names import InvalidFileName, InvalidFileSize, validate_file_name, validate_size
from services.ingest.onepass import MD5, XXH3_128, InvalidChecksum, parse_checksum
from shared.safe_paths import PATH_MAX, Beneath, split_beneath

_FILE_TYPE_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class RefusalCode(StrEnum):
    """The stable words an `ingest.rejected` event and an HTTP error carry."""

    INVALID_NAME = "invalid_name"
    INVALID_TYPE = "invalid_type"
    INVALID_SIZE = "invalid_size"
    INVALID_CHECKSUM = "invalid_checksum"
    INVALID_PATH = "invalid_path"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    SIZE_MISMATCH = "size_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    NAME_CONFLICT = "name_conflict"
    NO_STORE = "no_store"


# How each refusal reads over HTTP: a conflict is 409, a store with no room 507, bad input 400.
HTTP_STATUS = {
    RefusalCode.NAME_CONFLICT: 409,
    RefusalCode.NOT_FOUND: 404,
    RefusalCode.TOO_LARGE: 413,
    RefusalCode.NO_STORE: 507,
    RefusalCode.SIZE_MISMATCH: 422,
    RefusalCode.CHECKSUM_MISMATCH: 422,
}


@dataclass(frozen=True)
class Refusal:
    """Why an ingest is refused: a stable code and a message that says what to do."""

    code: RefusalCode
    reason: str

    @property
    def http_status(self) -> int:
        """The HTTP status this refusal is reported with."""
        return HTTP_STATUS.get(self.code, 400)


@dataclass(frozen=True)
class Claim:
    """What the announcer says about a file: its name, type and, optionally, size and checksum."""

    name: str
    file_type: str
    size: int | None = None
    checksum: str | None = None

    @property
    def algorithm(self) -> str | None:
        """The algorithm of the claimed checksum (xxh3-128 or md5), if one was claimed."""
        return self.checksum.split(":", 1)[0] if self.checksum else None


@dataclass(frozen=True)
class Measured:
    """What the one-pass copy found: the size and the checksums it computed, by algorithm."""

    size: int
    checksums: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExistingFile:
    """A file already minted under the claimed name."""

    name: str
    size: int
    checksum: str
    md5: str | None = None

    def checksums(self) -> dict[str, str]:
        """Its known checksums by algorithm."""
        known = {XXH3_128: self.checksum}
        if self.md5:
            known[MD5] = self.md5
        return known


@dataclass(frozen=True)
class Mint:
    """Verdict: mint a new file."""


@dataclass(frozen=True)
class AlreadyMinted:
    """Verdict: the same file exists already; return it, change nothing, emit nothing."""

    existing: ExistingFile


Verdict = Mint | AlreadyMinted | Refusal


def check_claim(claim: Claim, max_bytes: int) -> Refusal | None:
    """Refuse a claim that can never succeed (bad name, type, size or checksum text) before any byte moves."""
    try:
        validate_file_name(claim.name)
    except InvalidFileName as e:
        return Refusal(RefusalCode.INVALID_NAME, str(e))
    if not claim.file_type or len(claim.file_type) > 64 or not set(claim.file_type) <= _FILE_TYPE_CHARACTERS:
        return Refusal(
            RefusalCode.INVALID_TYPE,
            f"invalid file type {claim.file_type[:80]!r}: use 1-64 of letters, digits, '_' and '-' (e.g. 'uvh5')",
        )
    if claim.size is not None:
        refusal = check_size(claim.size, max_bytes)
        if refusal is not None:
            return refusal
    if claim.checksum is not None:
        try:
            parse_checksum(claim.checksum)
        except InvalidChecksum as e:
            return Refusal(RefusalCode.INVALID_CHECKSUM, str(e))
    return None


def check_replica_claim(claim: Claim, max_bytes: int) -> Refusal | None:
    """`check_claim` for a replica of another site's file: its size and xxh3-128 checksum (what its origin minted
    it with, the only checksum a files row records) are required, since every byte is verified against them."""
    refusal = check_claim(claim, max_bytes)
    if refusal is None and claim.size is None:
        refusal = Refusal(RefusalCode.INVALID_SIZE, f"a replica of {claim.name} needs the size it was minted with")
    if refusal is None and claim.algorithm != XXH3_128:
        refusal = Refusal(RefusalCode.INVALID_CHECKSUM, f"a replica of {claim.name} is verified against the xxh3-128 "
                          f"checksum its origin minted it with, not {claim.checksum!r}: send 'xxh3-128:<32 hex>' as "
                          "file.minted said")
    return refusal


def check_size(size: int, max_bytes: int) -> Refusal | None:
    """Refuse a negative or non-integer size (invalid_size) or one above the site's maximum (too_large)."""
    try:
        validate_size(size, max_bytes)
    except InvalidFileSize as e:
        code = RefusalCode.TOO_LARGE if size > max_bytes else RefusalCode.INVALID_SIZE
        return Refusal(code, str(e))
    return None


def locate_source(path: str, allowed_roots: tuple[str, ...]) -> Beneath | Refusal:
    """The source root that holds `path` and the part below it, or why it may not be read (no file is touched).

    Only text is compared here; opening it beneath that root without following a symlink is the caller's next step.
    """
    shown = f"{path[:200]!r}{'...' if len(path) > 200 else ''}"
    if not path or "\0" in path:
        return Refusal(RefusalCode.INVALID_PATH, f"invalid source path {shown}: empty or contains NUL")
    if len(os.fsencode(path)) >= PATH_MAX:
        return Refusal(RefusalCode.INVALID_PATH, f"refusing source path {shown}: it is {len(path)} characters long, "
                       f"longer than the {PATH_MAX - 1} bytes a path can have")
    if not os.path.isabs(path):
        return Refusal(RefusalCode.INVALID_PATH, f"source path {shown} must be absolute")
    if ".." in path.split(os.sep):
        return Refusal(RefusalCode.INVALID_PATH, f"refusing source path {shown}: it contains '..' (path traversal)")
    if not allowed_roots:
        return Refusal(RefusalCode.INVALID_PATH, f"refusing source path {shown}: this site reads local paths from no "
                       "directory; an operator sets [services.ingest] source_roots to the directories instruments "
                       "write to")
    beneath = split_beneath(path, allowed_roots)
    if beneath is None:
        where = "is a source root itself, not a file in one" if os.path.normpath(path) in allowed_roots else (
            "is outside the directories this site ingests from")
        return Refusal(RefusalCode.INVALID_PATH, f"refusing source path {shown}: it {where} "
                       f"([services.ingest] source_roots = {list(allowed_roots)})")
    return beneath


def compare_with_claim(claim: Claim, measured: Measured) -> Refusal | None:
    """Refuse when the bytes that arrived differ from what was announced (size first, then checksum)."""
    if claim.size is not None and claim.size != measured.size:
        return Refusal(
            RefusalCode.SIZE_MISMATCH,
            f"{claim.name}: announced {claim.size} bytes but {measured.size} arrived; "
            "re-send the whole file or correct the announcement",
        )
    if claim.checksum is not None and claim.algorithm is not None:
        actual = measured.checksums.get(claim.algorithm)
        if actual is not None and actual != claim.checksum:
            return Refusal(
                RefusalCode.CHECKSUM_MISMATCH,
                f"{claim.name}: announced checksum {claim.checksum} but the bytes that arrived have {actual}; "
                "the file was corrupted or changed: re-send it",
            )
    return None


def _same_file(known: Mapping[str, str], existing: ExistingFile) -> bool | None:
    """True/False when some checksum can be compared with the existing file's, None when none can."""
    theirs = existing.checksums()
    common = [alg for alg in known if alg in theirs]
    if not common:
        return None
    return all(known[alg] == theirs[alg] for alg in common)


def decide_before_copy(claim: Claim, existing: ExistingFile | None) -> Verdict | None:
    """Decide without moving bytes when the claimed checksum settles it; None means: copy, then decide."""
    if existing is None or claim.checksum is None or claim.algorithm is None:
        return None
    same = _same_file({claim.algorithm: claim.checksum}, existing)
    if same is None:
        return None
    return AlreadyMinted(existing) if same else _conflict(claim, existing)


def decide_mint(claim: Claim, measured: Measured, existing: ExistingFile | None) -> Verdict:
    """The verdict once the bytes are staged and measured: refuse a mismatch, return a duplicate, or mint."""
    refusal = compare_with_claim(claim, measured)
    if refusal is not None:
        return refusal
    if existing is None:
        return Mint()
    same = _same_file(measured.checksums, existing)
    return AlreadyMinted(existing) if same else _conflict(claim, existing)


def _conflict(claim: Claim, existing: ExistingFile) -> Refusal:
    return Refusal(
        RefusalCode.NAME_CONFLICT,
        f"a different file named {claim.name!r} already exists (checksum {existing.checksum}, {existing.size} "
        "bytes); names are unique and minted files never change: choose another name",
    )
