"""The Globus manager's options: `[services.transfer.globus]`, checked at start-up (docs/transfer-globus.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import ConfigurationError

TABLE = "[services.transfer.globus]"


class GlobusPeer(BaseModel):
    """Where a peer receives: its collection, the landing directory on it, and that directory as its ingest sees it."""

    model_config = ConfigDict(extra="forbid")

    collection_id: UUID
    landing_path: str  # on the peer's collection, e.g. "/obsflow/landing/"
    ingest_path: str  # the same directory on the peer's machine, beneath one of its ingest's source_roots

    @field_validator("landing_path", "ingest_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path (got {value!r})")
        return value


class GlobusOptions(BaseModel):
    """`[services.transfer.globus]`: this site's Globus identity and collection, and each peer's landing place."""

    model_config = ConfigDict(extra="forbid")

    client_id: UUID | None = None  # a confidential app's client id, with client_secret_file ...
    client_secret_file: Path | None = None
    token_file: Path | None = None  # ... or a Transfer access token
    collection_id: UUID  # this site's collection: where the stores are seen
    path_map: dict[str, str]  # a local store root -> the same directory as a path on this site's collection
    peers: dict[str, GlobusPeer] = {}
    batch_files: int = Field(default=512, ge=128, le=1024)  # files per Globus task
    poll_interval_s: float = Field(default=30.0, gt=0)
    deadline_s: float = Field(default=86400.0, gt=0)  # a task not done by then is cancelled, its files Failed
    sync_level: Literal["exists", "size", "mtime", "checksum"] = "checksum"
    verify_checksum: bool = True
    preserve_timestamp: bool = True
    skip_source_errors: bool = True  # a missing or unreadable source file fails alone, not its whole task
    data_access: bool = False  # request data_access consent for both collections (non-HA mapped GCS collections)
    request_retries: int = Field(default=3, ge=0)  # the SDK's own retries of a 429/5xx before this round gives up
    adopt_concurrency: int = Field(default=4, ge=1)  # adoptions (hashing at the peer) in flight at once

    @model_validator(mode="after")
    def _one_identity(self) -> GlobusOptions:
        app = (self.client_id is not None, self.client_secret_file is not None)
        token = self.token_file is not None
        if not (app == (True, True) and not token or app == (False, False) and token):
            raise ValueError("give either client_id and client_secret_file (a confidential app) or token_file")
        for path in (self.client_secret_file, self.token_file):
            if path is not None and not path.is_absolute():
                raise ValueError(f"secret files must be absolute paths (got {str(path)!r})")
        return self


def globus_options(raw: dict[str, Any]) -> GlobusOptions:
    """GlobusOptions from the `globus` table of `settings.service_options("transfer")`; ConfigurationError if bad."""
    try:
        return GlobusOptions.model_validate(raw)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'table'}: {err['msg']}" for err in e.errors())
        raise ConfigurationError(f"{TABLE}: {problems} (see docs/transfer-globus.md)") from e


def read_secret(path: Path, key: str) -> str:
    """The secret in `path` (the option `key`'s file), stripped; ConfigurationError saying what to fix."""
    try:
        value = path.read_text().strip()
    except OSError as e:
        raise ConfigurationError(f"{TABLE} {key} {str(path)!r} cannot be read ({e.strerror}): create it") from e
    if not value:
        raise ConfigurationError(f"{TABLE} {key} {str(path)!r} is empty: write the secret into it")
    return value
