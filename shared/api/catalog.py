"""The catalog API's answers: files, their instances at every site, observations, sessions, search pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field

from shared.api.base import ApiModel

SessionStatus = Literal["open", "closed"]


class CatalogFile(ApiModel):
    """A file the site's catalog knows (minted here or elsewhere), with how many copies exist and where."""

    name: str
    size: int
    checksum: str
    file_type: str
    observation_id: str | None = None
    start_jd: float | None = None
    duration_s: float | None = None
    origin_site: str
    uploader: str
    created_at: datetime
    produced_by: dict[str, Any] | None = Field(
        default=None, description="what made it: a pipeline job's run, job, workflow, attempt and inputs, or the "
                                  "metadata an uploader sent as produced_by")
    n_instances: int
    instance_sites: list[str] = []


class FileList(ApiModel):
    """Files, newest first."""

    results: list[CatalogFile]


class Instance(ApiModel):
    """One copy of a file on a store of a site; `local` marks this site's."""

    site: str
    store: str
    path: str
    verified_at: datetime
    local: bool


class FileInstances(ApiModel):
    """Every known copy of a file: this site's first, then the others'."""

    file: str
    site: str = Field(description="the site that answered")
    instances: list[Instance]


class ObservationSummary(ApiModel):
    """An observation as a search returns it."""

    observation_id: str
    start_jd: float
    duration_s: float | None = None
    session_id: str | None = None
    n_files: int


class Observation(ObservationSummary):
    """One observation and the names of its files."""

    files: list[str]


class SessionSummary(ApiModel):
    """An observing session as lists and searches return it."""

    session_id: str
    start_jd: float
    end_jd: float
    n_observations: int
    last_seen_at: datetime
    closed_at: datetime | None = None
    status: SessionStatus


class Session(SessionSummary):
    """One observing session with its number of files."""

    n_files: int


class SessionList(ApiModel):
    """Sessions, newest first."""

    results: list[SessionSummary]


class SessionClosure(ApiModel):
    """A session closed on request: its session.closed event is on its way."""

    session_id: str
    closed_at: datetime
    event_id: str
    files: int = Field(description="how many files the session.closed event names")


class Conflict(ApiModel):
    """One name minted by two sites with different contents: the file this catalog kept and the other."""

    name: str
    kept_site: str = Field(description="the site of the file this catalog kept (the first mint it read)")
    kept_checksum: str
    kept_size: int
    other_site: str
    other_checksum: str
    other_size: int
    other_event_id: str = Field(description="the event id of the other site's file.minted")
    event_id: str = Field(description="the file.conflicted event this catalog emitted")
    seen_at: datetime


class ConflictList(ApiModel):
    """Conflicting mints, newest first."""

    results: list[Conflict]


Row = TypeVar("Row", CatalogFile, ObservationSummary, SessionSummary)


class SearchPage(ApiModel, Generic[Row]):
    """One page of a search; `next_cursor` (set when the page is full) asks for the next."""

    results: list[Row]
    next_cursor: str | None = Field(description="set when the page is full: send it as `cursor` for the next page")


class AnySearchPage(SearchPage[CatalogFile | ObservationSummary | SessionSummary]):  # type: ignore[type-var]
    """A page of a search of any target (files, observations or sessions, as the request's target says)."""


SEARCH_PAGES: dict[str, type[SearchPage[Any]]] = {
    "files": SearchPage[CatalogFile],
    "observations": SearchPage[ObservationSummary],
    "sessions": SearchPage[SessionSummary],
}

CATALOG_MODELS: tuple[type[ApiModel], ...] = (
    CatalogFile, FileList, Instance, FileInstances, Observation, ObservationSummary, Session, SessionSummary,
    SessionList, SessionClosure, AnySearchPage, Conflict, ConflictList,
)
