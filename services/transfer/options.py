"""The transfer service's settings: the `[services.transfer]` table of the config file, checked once at start-up."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from shared.errors import ConfigurationError
from shared.settings import Settings


@dataclass(frozen=True)
class TransferOptions:
    """How often transfers are tried and how fast they may go; every key of `[services.transfer]` is a field."""

    max_attempts: int = 8  # a transfer that failed this many times is `failed` until someone acts
    backoff_base_s: float = 5.0  # the wait after the first failure; doubled after each failure ...
    backoff_cap_s: float = 3600.0  # ... up to this
    evaluation_interval_s: float = 0.25  # how often pending files are evaluated against the live orders
    catch_up_interval_s: float = 300.0  # how often every live order is run against the catalog in full
    http_concurrency_initial: int = 4  # HTTP pushes in flight per peer at first ...
    http_concurrency_max: int = 32  # ... and at most, as the link allows
    evaluation_batch: int = 500  # names asked of the catalog in one search (CatalogSearch.names_matching's chunk)
    send_batch_min: int = 128  # files per batch sent to a peer (a Globus task): at least, when that many wait ...
    send_batch_max: int = 1024  # ... and at most
    catalog_timeout_s: float = 30.0  # one request to this site's catalog
    dispatch_interval_s: float = 0.25  # how often due transfers are looked for (and at once when a batch ends)
    dispatch_window: int = 2000  # due transfers looked at in one pass
    globus: dict[str, Any] = field(default_factory=dict)  # [services.transfer.globus]: docs/transfer-globus.md

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"[services.transfer] {f.name} must be a whole number of at least 1, "
                                         f"got {value!r}")
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not (math.isfinite(value) and value > 0)):
                raise ConfigurationError(f"[services.transfer] {f.name} must be a positive number of seconds, "
                                         f"got {value!r}")
        for low, high in (("backoff_base_s", "backoff_cap_s"), ("http_concurrency_initial", "http_concurrency_max"),
                          ("send_batch_min", "send_batch_max")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigurationError(f"[services.transfer] {low} ({getattr(self, low)!r}) must not exceed "
                                         f"{high} ({getattr(self, high)!r})")

    def backoff_s(self, failures: int) -> float:
        """The wait before the next attempt after `failures` failed ones (none: no wait)."""
        if failures < 1:
            return 0.0
        return min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(failures - 1, 62))

    @classmethod
    def from_settings(cls, settings: Settings) -> TransferOptions:
        """Read `[services.transfer]`; ConfigurationError naming an unknown key or a bad value."""
        return cls.from_raw(settings.service_options("transfer"))

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> TransferOptions:
        """TransferOptions from the table's values."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigurationError(f"unknown [services.transfer] settings {unknown}; known: {', '.join(known)}")
        return cls(**raw)
