"""What the client raises: every error says what was wrong and what to do."""

from __future__ import annotations

from typing import Any

from shared.errors import ObsflowError, TransientError


class ClientError(ObsflowError):
    """The server refused a request: `status`, `code` (its stable error word, to branch on) and its message saying
    what to do; `details` holds what some errors add (a search error's `path`, the clause at fault)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        where = f" at {self.details['path']}" if "path" in self.details else ""
        super().__init__(f"{message}{where} ({status} {code})")


class ServerUnavailable(TransientError):
    """The service could not be reached, or answered 503: try again shortly (or start it)."""

    def __init__(self, message: str, status: int | None = None, code: str = "unavailable") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class MissingToken(ObsflowError):
    """No API token was given or found; the message says where to put one."""


class LocalFileError(ObsflowError):
    """A local file to upload cannot be read; the message names it and why."""
