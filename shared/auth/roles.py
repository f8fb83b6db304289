"""Roles, ordered: an endpoint declares its minimum and every higher role passes."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    """callback-only (peer sites) < read-only < read-append < admin."""

    CALLBACK_ONLY = 1
    READ_ONLY = 2
    READ_APPEND = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        """The role's name as users write it: read-append, callback-only, ..."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named `text` (read-only, read-append, admin, callback-only)."""
        try:
            return cls[text.upper().replace("-", "_")]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise ValueError(f"unknown role {text!r}; roles are {names}") from None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account name and its role."""

    account: str
    role: Role
