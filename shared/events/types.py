"""The concrete events obsflow services emit. Changing a payload means a new version and an upcaster."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, StrictBool, StrictInt

from shared.events.bounds import Checksum, Name, PathText, Word
from shared.events.registry import Payload, event_payload, upcaster


@event_payload
class ObservationAnnounced(Payload):
    """The correlator wrote a file at `path`; ingest it. Published by instruments, consumed by ingest."""

    event_type = "observation.announced"
    producers = ("instrument",)
    path: PathText
    file_type: Word
    name: Name | None = None
    expected_size: StrictInt | None = Field(default=None, ge=0)
    expected_checksum: Checksum | None = None

    def routing_detail(self) -> str | None:
        return self.file_type


@event_payload
class FileMinted(Payload):
    """A file now exists, with immutable metadata. Emitted by ingest; consumed by catalog, transfer, scheduler."""

    event_type = "file.minted"
    producers = ("ingest",)
    version = 2
    name: Name
    size: StrictInt = Field(ge=0)
    checksum: Checksum
    file_type: Word
    observation_id: Name | None = None
    start_jd: float | None = None
    duration_s: float | None = None
    origin_site: Word
    uploader: Name
    created_at: datetime
    produced_by: dict[str, Any] | None = None

    def routing_detail(self) -> str | None:
        return self.file_type


@upcaster("file.minted", from_version=1)
def _file_minted_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    # Version 1 carried HERA's float `obsid` (the start JD) and knew neither durations nor provenance.
    payload["start_jd"] = payload.pop("obsid", None)
    payload.setdefault("observation_id", None)
    payload.setdefault("duration_s", None)
    payload.setdefault("produced_by", None)
    return payload


@event_payload
class InstanceCreated(Payload):
    """A verified copy of a file lies on a store of a site. Emitted by ingest (of a file it minted, or of a replica
    it received and verified); consumed by catalog and transfer, here and at every peer."""

    event_type = "instance.created"
    producers = ("ingest",)
    file_name: Name
    site: Word
    store: Name
    path: PathText
    size: StrictInt = Field(ge=0)
    checksum: Checksum
    verified_at: datetime


@event_payload
class InstanceDeleted(Payload):
    """A copy was removed from a store (never the last verified one). Emitted by ingest and transfer."""

    event_type = "instance.deleted"
    producers = ("ingest", "transfer")
    file_name: Name
    site: Word
    store: Name
    path: PathText
    reason: str


@event_payload
class IngestRejected(Payload):
    """An ingest was refused; nothing was minted. `code` is a stable word, `reason` says what to do."""

    event_type = "ingest.rejected"
    producers = ("ingest",)
    code: str
    reason: str
    name: str | None = None
    path: str | None = None
    upload_id: str | None = None

    def routing_detail(self) -> str | None:
        return self.code


@event_payload
class SessionClosed(Payload):
    """An observing session is complete: its time range and files, in time order. Emitted by catalog."""

    event_type = "session.closed"
    producers = ("catalog",)
    session_id: Name
    start_jd: float
    end_jd: float
    file_names: list[Name]


@event_payload
class FileConflicted(Payload):
    """Two sites minted one name with different contents: the catalog kept the first it heard of and records the
    other. Emitted by the catalog that noticed (each site's catalog notices on its own)."""

    event_type = "file.conflicted"
    producers = ("catalog",)
    name: Name
    kept_site: Word
    kept_checksum: Checksum
    kept_size: StrictInt = Field(ge=0)
    other_site: Word
    other_checksum: Checksum
    other_size: StrictInt = Field(ge=0)
    other_event_id: uuid.UUID


@event_payload
class TransferFailed(Payload):
    """A transfer gave up: its file did not reach `destination` after `attempts` attempts, or the destination refused
    it for good (`permanent`). It stays listed as stuck with this reason until someone acts. Emitted by transfer."""

    event_type = "transfer.failed"
    producers = ("transfer",)
    file_name: Name
    destination: Word
    attempts: StrictInt = Field(ge=0)
    reason: str = Field(max_length=4096)
    permanent: StrictBool

    def routing_detail(self) -> str | None:
        return self.destination


@event_payload
class JobStarted(Payload):
    """A pipeline job began running. Emitted by scheduler."""

    event_type = "job.started"
    producers = ("scheduler",)
    run_id: str
    job_id: str
    action: str
    files: list[str]
    attempt: StrictInt
    backend: Word
    external_id: str | None = None

    def routing_detail(self) -> str | None:
        return self.action


@event_payload
class JobDone(Payload):
    """A pipeline job succeeded. Emitted by scheduler; scientists subscribe by action."""

    event_type = "job.done"
    producers = ("scheduler",)
    run_id: str
    job_id: str
    action: str
    files: list[str]
    exit_status: StrictInt
    duration_s: float
    log_path: str | None = None
    outputs: list[str] = []

    def routing_detail(self) -> str | None:
        return self.action


@event_payload
class JobFailed(Payload):
    """A pipeline job failed (`will_retry` tells whether another attempt follows). Emitted by scheduler."""

    event_type = "job.failed"
    producers = ("scheduler",)
    run_id: str
    job_id: str
    action: str
    files: list[str]
    attempt: StrictInt
    reason: str
    will_retry: StrictBool
    exit_status: StrictInt | None = None
    log_path: str | None = None

    def routing_detail(self) -> str | None:
        return self.action


@event_payload
class WorkflowFinished(Payload):
    """Every job of a run has ended. Emitted by scheduler."""

    event_type = "workflow.finished"
    producers = ("scheduler",)
    run_id: str
    workflow: str
    succeeded: StrictBool
    jobs: StrictInt
    failed_jobs: StrictInt
