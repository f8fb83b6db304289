"""The ingest API's answers: minted files with their local instances, upload tickets."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, Field

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


class ReplicaFile(ApiModel):
    """A file minted at another site, as its `file.minted` said: what the bytes of a replica must match.

    The transfer service of the sending site fills it from the event; the receiving ingest verifies every byte
    against `size` and `checksum` before it records an instance, and keeps the rest as the file's metadata.
    """

    name: str
    size: int = Field(ge=0)
    checksum: str = Field(description="xxh3-128:<32 hex>, as minted")
    file_type: str
    observation_id: str | None = None
    start_jd: float | None = None
    duration_s: float | None = None
    origin_site: str = Field(min_length=1)
    uploader: str = Field(min_length=1)
    created_at: AwareDatetime
    produced_by: dict[str, Any] | None = None


class ReplicaRequest(ApiModel):
    """`POST /api/v1/replicas`: announce the bytes of a copy of another site's file (then PUT them)."""

    file: ReplicaFile


class LocalReplicaRequest(ApiModel):
    """`POST /api/v1/replicas/local`: adopt a copy of another site's file that lies beneath a source root."""

    file: ReplicaFile
    path: str = Field(description="absolute, beneath one of ingest's source_roots")


INGEST_MODELS: tuple[type[ApiModel], ...] = (IngestedFile, LocalInstance, MintAnswer, UploadTicket, FileAnswer,
                                             ReplicaFile, ReplicaRequest, LocalReplicaRequest)
