"""A file's provenance from what the APIs hold: the job that produced it (the catalog's produced_by), that job's
run (the scheduler), and the files produced from it (a catalog search on their inputs)."""

from __future__ import annotations

from pydantic import ConfigDict, Field, ValidationError

from shared.api.base import ApiModel
from shared.api.catalog import CatalogFile
from shared.api.scheduler import Job, RunDetail
from shared.client.catalog import CatalogCalls
from shared.client.errors import ClientError
from shared.client.scheduler import SchedulerCalls

DERIVED_LIMIT = 1000


class ProducedBy(ApiModel):
    """What a pipeline job records of itself when it uploads a product (`obsflow upload` inside a job); other
    uploaders may send anything as produced_by, kept as extra fields."""

    model_config = ConfigDict(frozen=True, extra="allow")
    run: str | None = None
    job: str | None = None
    workflow: str | None = None
    attempt: int | str | None = None
    inputs: list[str] = Field(default=[], description="the job's input files, as paths or names")


class FileProvenance(ApiModel):
    """Where a file comes from and what was made from it, as far as this site's catalog and scheduler know."""

    file: CatalogFile
    produced_by: ProducedBy | None = Field(description="None for a file no pipeline job produced (raw data)")
    run: RunDetail | None = Field(description="the run that produced it, if this site's scheduler has it")
    derived: list[CatalogFile] = Field(description="files produced from it (by jobs that took it as an input)")

    @property
    def job(self) -> Job | None:
        """The job of `run` that produced the file."""
        if self.run is None or self.produced_by is None:
            return None
        return next((job for job in self.run.jobs if job.job_key == self.produced_by.job), None)


def produced_by_of(file: CatalogFile) -> ProducedBy | None:
    """The file's produced_by, typed where it has the fields a job records."""
    if file.produced_by is None:
        return None
    try:
        return ProducedBy.model_validate(file.produced_by)
    except ValidationError:  # free-form metadata of another shape: kept as it is
        return ProducedBy.model_construct(**file.produced_by)


class ProvenanceCalls(CatalogCalls, SchedulerCalls):
    """A file's provenance, from the catalog and the scheduler."""

    async def provenance(self, name: str, *, derived_limit: int = DERIVED_LIMIT) -> FileProvenance:
        """What produced the file `name` (job, run, inputs) and the files produced from it (at most
        `derived_limit`, in time order)."""
        file = await self.catalog_file(name)
        produced_by = produced_by_of(file)
        run = None
        if produced_by is not None and produced_by.run:
            try:
                run = await self.run(produced_by.run)
            except ClientError as e:
                if e.status != 404:  # a run of another site's scheduler, or one since removed: not known here
                    raise
        page = await self.search({"derived_from": {"is": name}}, limit=derived_limit)
        return FileProvenance(file=file, produced_by=produced_by, run=run, derived=page.results)


