"""Bounded text for event fields: an event from outside cannot carry a 16 MiB path into a consumer.

Limits are in UTF-8 bytes, as the operating system counts them: a path at most PATH_MAX (4096 bytes), a name at most
NAME_MAX (255). The whole event is bounded too (`bus.max_event_bytes`), so lists need no bound of their own.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

PATH_MAX = 4096
NAME_MAX = 255


def _at_most(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value.encode("utf-8", "surrogatepass")) > limit:
            raise ValueError(f"at most {limit} bytes (UTF-8) are accepted")
        return value

    return AfterValidator(check)


# The character count is checked first (cheap, and refuses a 16 MiB string before it is encoded).
PathText = Annotated[str, StringConstraints(max_length=PATH_MAX), _at_most(PATH_MAX)]
Name = Annotated[str, StringConstraints(max_length=NAME_MAX), _at_most(NAME_MAX)]
Word = Annotated[str, StringConstraints(max_length=64), _at_most(64)]  # an event type, a file type, a code
Checksum = Annotated[str, StringConstraints(max_length=256), _at_most(256)]  # `algorithm:hexdigest`
