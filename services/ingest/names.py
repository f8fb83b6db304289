"""What a file name, a size and a path inside a store may be.

A file name is one flat path component: letters A–Z a–z, digits 0–9 and ``. _ + -``, starting with a
letter or digit, at most 255 characters (the usual filesystem limit for one component), with no ``..``.
Sub-paths (``/``) are not allowed: the name is global and the store decides where it lives.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

DEFAULT_MAX_NAME_LENGTH = 255
ALLOWED_CHARACTERS_TEXT = "letters A-Z a-z, digits 0-9 and '.', '_', '+', '-'"
_ALLOWED_CHARACTER = re.compile(r"[A-Za-z0-9._+-]")
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_RULES = (
    f"a file name may contain only {ALLOWED_CHARACTERS_TEXT}, must start with a letter or digit, "
    "must not contain '..' and is one name, not a path"
)


class InvalidFileName(ValueError):
    """A proposed file name breaks the naming rules (the message says which rule and what is allowed)."""


class InvalidFileSize(ValueError):
    """A size is not a non-negative integer."""


class FileTooLarge(InvalidFileSize):
    """A file is larger than the configured maximum."""


class PathOutsideStore(ValueError):
    """A relative path would resolve outside the store root (path traversal)."""


def _describe(character: str) -> str:
    name = unicodedata.name(character, "")
    code = f"U+{ord(character):04X}"
    return f"{character!r} ({code} {name})" if name else f"{character!r} ({code})"


def _first_offence(name: str) -> str | None:
    for position, character in enumerate(name):
        if unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp"):
            return f"control or invisible character {_describe(character)} at position {position}"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        return "it is an absolute path"
    if "/" in name or "\\" in name:
        return "it contains a path separator ('/' or '\\'); sub-paths are not allowed"
    if ".." in name:
        return "it contains '..'"
    for position, character in enumerate(name):
        if not _ALLOWED_CHARACTER.fullmatch(character):
            return f"character {_describe(character)} at position {position} is not allowed"
    if not name[0].isascii() or not name[0].isalnum():
        return f"it starts with {name[0]!r}; a name must start with a letter or digit"
    return None


def validate_file_name(name: str, max_length: int = DEFAULT_MAX_NAME_LENGTH) -> str:
    """Return name unchanged if it is a valid file name, else raise InvalidFileName saying why."""
    if not isinstance(name, str):
        raise InvalidFileName(f"a file name must be a string, got {type(name).__name__}; {_RULES}")
    if not name:
        raise InvalidFileName(f"the file name is empty; {_RULES}")
    if len(name) > max_length:
        raise InvalidFileName(
            f"the file name is {len(name)} characters long, the maximum is {max_length}: {name[:40]!r}..."
        )
    offence = _first_offence(name)
    if offence is not None:
        raise InvalidFileName(f"invalid file name {name[:80]!r}: {offence}; {_RULES}")
    # Belt and braces: the rules above must together mean exactly this pattern.
    if not _VALID_NAME.fullmatch(name):
        raise InvalidFileName(f"invalid file name {name[:80]!r}; {_RULES}")
    return name


def validate_size(size: int, max_bytes: int) -> int:
    """Return size if it is an integer in [0, max_bytes], else raise InvalidFileSize / FileTooLarge."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidFileSize(f"a size must be an integer number of bytes, got {size!r}")
    if size < 0:
        raise InvalidFileSize(f"a size cannot be negative, got {size}")
    if size > max_bytes:
        raise FileTooLarge(
            f"the file is {size} bytes, larger than this site's maximum of {max_bytes} bytes; "
            "split it or ask an operator to raise the limit"
        )
    return size


def safe_join(root: Path, relative: str | os.PathLike[str]) -> Path:
    """Join a relative path under root, refusing (PathOutsideStore) anything that resolves outside root.

    Symbolic links are resolved before the check, so a link inside the store pointing elsewhere is refused.
    """
    text = os.fspath(relative)
    if not text or "\0" in text:
        raise PathOutsideStore(f"invalid path {text!r}: it is empty or contains a NUL character")
    if os.path.isabs(text):
        raise PathOutsideStore(f"refusing absolute path {text!r}: paths must be relative to the store root")
    resolved_root = Path(root).resolve()
    candidate = (resolved_root / text).resolve()
    if candidate == resolved_root or not candidate.is_relative_to(resolved_root):
        raise PathOutsideStore(
            f"refusing path {text!r}: it resolves to {candidate}, which is not inside the store root "
            f"{resolved_root}"
        )
    return candidate
