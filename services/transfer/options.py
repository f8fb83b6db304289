"""The transfer service's settings: the `[services.transfer]` table of the config file, checked at start-up."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigurationError


class TransferOptions(BaseModel):
    """How often orders are evaluated and transfers dispatched, how failures are retried, how much is in flight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=8, ge=1, le=1000)  # then the file is stuck, with its last reason
    retry_base_s: float = Field(default=5.0, gt=0)  # the first retry's wait; doubled each attempt
    retry_cap_s: float = Field(default=3600.0, gt=0)
    evaluation_interval_s: float = Field(default=0.25, gt=0)  # pending names asked against the orders
    catch_up_interval_s: float = Field(default=300.0, gt=0)  # every order swept for what was missed
    dispatch_interval_s: float = Field(default=0.25, gt=0)
    dispatch_window: int = Field(default=2000, ge=1)  # due transfers looked at per pass
    http_concurrency: int = Field(default=4, ge=1)  # files in flight per peer at first; then adapted
    http_max_concurrency: int = Field(default=32, ge=1)
    globus_batch_files: int = Field(default=512, ge=128, le=1024)  # files per Globus task (the SO Librarian's range)
    globus: dict[str, Any] = {}  # the Globus manager's own options (docs/transfer-globus.md)


def transfer_options(raw: dict[str, Any]) -> TransferOptions:
    """TransferOptions from `settings.service_options("transfer")`; ConfigurationError naming what is wrong."""
    try:
        return TransferOptions(**raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigurationError(f"[services.transfer]: {problems}") from e
