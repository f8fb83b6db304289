"""Reading single entries of a parsed hera_opm config, with hera_opm's `${Section:key}` interpolation."""

from __future__ import annotations

import re
from typing import Any

from services.scheduler.workflow.errors import WorkflowConfigError

# hera_opm matches at the start of the value only, greedily: "${Options:a}" is replaced by the whole
# value of [Options] a, keeping its type, and anything after the closing brace is dropped.
_INTERPOLATION = re.compile(r"\$\{(.+)\}")

RawConfig = dict[str, Any]


def interpolate(raw: RawConfig, value: Any) -> Any:
    """Replace a value of the form `${Section:key}` by that entry, as hera_opm does."""
    match = _INTERPOLATION.match(str(value))
    if match is None:
        return value
    parts = match.group(1).split(":")
    if len(parts) != 2:
        raise WorkflowConfigError(f"cannot interpolate {value!r}: write it as ${{Section:key}} with exactly one colon")
    header, key = parts
    section = raw.get(header)
    if not isinstance(section, dict) or key not in section:
        raise WorkflowConfigError(
            f"{value!r} refers to option {key!r} under [{header}], which the config does not define; "
            "add it or fix the reference"
        )
    return section[key]


def entry(raw: RawConfig, header: str, item: str) -> Any:
    """The interpolated value of `item` under [header], or None when absent (lists element-wise)."""
    section = raw.get(header)
    if section is None:
        return None
    if not isinstance(section, dict):
        raise WorkflowConfigError(f"[{header}] must be a table of options, not {section!r}")
    if item not in section:
        return None
    value = section[item]
    if isinstance(value, list):
        return [interpolate(raw, element) for element in value]
    return interpolate(raw, value)


def required_entry(raw: RawConfig, header: str, item: str) -> Any:
    """Like `entry`, but a missing value is an error naming the item and its section."""
    value = entry(raw, header, item)
    if value is None:
        raise WorkflowConfigError(f'the workflow config needs "{item}" under [{header}]; add it')
    return value


def optional_text(raw: RawConfig, header: str, item: str) -> str | None:
    """The entry as text (hera_opm formats these with str()), or None when absent."""
    value = entry(raw, header, item)
    return None if value is None else str(value)


def whole_number(value: Any, where: str) -> int:
    """A whole number (memory in MB, CPU count): hera_opm formats these with {:d}."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkflowConfigError(f"{where} must be a whole number without quotes, not {value!r}")
    if value < 1:
        raise WorkflowConfigError(f"{where} must be at least 1, not {value}")
    return value


def optional_whole_number(value: Any, where: str) -> int | None:
    """A whole number or None."""
    return None if value is None else whole_number(value, where)


def count(value: Any, where: str) -> int | str | None:
    """A chunk or stride size: a positive whole number (or its text), "all", or None."""
    if value is None or value == "all":
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise WorkflowConfigError(f'{where} must be a whole number or "all", not {value!r}')
    try:
        number = int(value)
    except ValueError:
        raise WorkflowConfigError(f'{where} must be a whole number or "all", not {value!r}') from None
    if number < 1:
        raise WorkflowConfigError(f"{where} must be at least 1, not {value!r}")
    return number


def flag(value: Any, where: str, default: bool) -> bool:
    """A true/false option; hera_opm refuses quoted booleans, and so do we."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise WorkflowConfigError(f"{where} must be true or false, written without quotes, not {value!r}")
    return value
