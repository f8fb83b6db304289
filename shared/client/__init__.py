"""The Python client of a site: uploads, searches, copies, sessions, provenance, workflow runs and events.

    async with ObsflowClient.from_settings() as client:
        document = await client.upload(Path("zen.2459122.30000.sum.uvh5"), file_type="uvh5")

See docs/client.md.
"""

from typing import TYPE_CHECKING, Any

from shared.client.client import ObsflowClient
from shared.client.errors import ClientError, LocalFileError, MissingToken, ServerUnavailable
from shared.client.provenance import FileProvenance, ProducedBy
from shared.client.scheduler import RunNotFinished
from shared.client.site import Site, api_token
from shared.client.uploads import Measured, Progress, file_checksums, job_provenance

if TYPE_CHECKING:
    from shared.client.events import InvalidStart, Subscription, stream_start

_EVENTS = ("InvalidStart", "Subscription", "stream_start")  # the bus behind them is imported when they are used

__all__ = [
    "ClientError", "FileProvenance", "InvalidStart", "LocalFileError", "Measured", "MissingToken", "ObsflowClient",
    "ProducedBy", "Progress", "RunNotFinished", "ServerUnavailable", "Site", "Subscription", "api_token",
    "file_checksums", "job_provenance", "stream_start",
]


def __getattr__(name: str) -> Any:
    if name in _EVENTS:
        from shared.client import events

        return getattr(events, name)
    raise AttributeError(f"module 'shared.client' has no attribute {name!r}")
