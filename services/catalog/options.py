"""The catalog's settings: the `[services.catalog]` table of the config file, checked once at start-up."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from services.catalog.sessions import SessionPolicy, SessionPolicyError
from shared.errors import ConfigurationError

_POLICY_KEYS = {
    "session_gap_days": "gap_days",
    "session_cadence_factor": "cadence_factor",
    "session_quiet_period_s": "quiet_period_s",
    "session_neighbour_count": "neighbour_count",
}
_OWN_KEYS = {"session_sweep_interval_s", "search_timeout_s"}


@dataclass(frozen=True)
class CatalogOptions:
    """How sessions are grouped and closed, how often idle sessions are swept, how long a search may run."""

    policy: SessionPolicy = SessionPolicy()
    sweep_interval_s: float = 60.0
    search_timeout_s: float = 30.0


def catalog_options(raw: dict[str, Any]) -> CatalogOptions:
    """CatalogOptions from `settings.service_options("catalog")`; ConfigurationError naming a bad key."""
    unknown = set(raw) - set(_POLICY_KEYS) - _OWN_KEYS
    if unknown:
        known = ", ".join(sorted([*_POLICY_KEYS, *_OWN_KEYS]))
        raise ConfigurationError(f"unknown [services.catalog] settings {sorted(unknown)}; known: {known}")
    try:
        policy = SessionPolicy(**{_POLICY_KEYS[k]: v for k, v in raw.items() if k in _POLICY_KEYS})
    except (SessionPolicyError, TypeError) as e:
        raise ConfigurationError(f"[services.catalog]: {e}") from e
    sweep = _positive(raw, "session_sweep_interval_s", 60.0)
    timeout = _positive(raw, "search_timeout_s", 30.0)
    return CatalogOptions(policy, sweep, timeout)


def _positive(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"[services.catalog] {key} must be a positive number of seconds, got {value!r}")
    return float(value)
