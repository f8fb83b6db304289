"""The ingest API's answers: minted files with their local instances, upload tickets."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.api.base import ApiModel


class LocalInstance(ApiModel):
    """A verified copy of a file on one of this site's stores."""

    store: str
    path: str
    size: int
    verified_at: datetime


class IngestedFile(ApiModel):
    """A file minted at this site, as ingest knows it: its immutable metadata and its local instances."""

    name: str
    size: int
    checksum: str
    md5: str | None = None
    file_type: str
    is_directory: bool = False
    observation_id: str | None = None
    start_jd: float | None = None
    duration_s: float | None = None
    origin_site: str
    uploader: str
    created_at: datetime
    instances: list[LocalInstance]


class MintAnswer(ApiModel):
    """The answer to an upload whose bytes are in: the file, and whether this request minted it."""

    file: IngestedFile
    created: bool = Field(description="false: it was minted already with this content, nothing changed")


class UploadTicket(ApiModel):
    """Where to send the bytes of an announced upload (phase two of the two-phase upload)."""

    upload_id: str
    url: str = Field(description="PUT the bytes here (a path on the ingest service)")
    method: Literal["PUT"]
    expires_at: datetime
    size: int
    checksum: str | None = Field(description="what the bytes must hash to (as announced)")


class FileAnswer(ApiModel):
    """A file minted at this site."""

    file: IngestedFile


INGEST_MODELS: tuple[type[ApiModel], ...] = (IngestedFile, LocalInstance, MintAnswer, UploadTicket, FileAnswer)
