"""The one error a search raises: which clause of the query was wrong, and what to write instead."""

from __future__ import annotations

import json
import re

from shared.errors import ObsflowError

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class SearchError(ObsflowError):
    """A search the catalog cannot run; field_path points at the offending clause (e.g. '$.and[1].size')."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field_path = field_path
        self.message = message

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The body of the HTTP 400 answer: the API's error shape, with the path of the clause at fault."""
        return {"error": {"code": "invalid_search", "message": self.message, "path": self.field_path}}


def child_path(path: str, key: str | int) -> str:
    """The path of a member of the JSON value at path: '$.and[0]', '$.size', '$.size[\">\"]'."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"
