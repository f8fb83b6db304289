"""ObsflowClient: every public call of a site's services, typed with the API's own models."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from shared.api.accounts import TokenIssued
from shared.client.provenance import ProvenanceCalls
from shared.client.site import Site, api_token
from shared.client.transfer import TransferCalls
from shared.client.transport import Transport
from shared.client.uploads import UploadCalls
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from shared.client.events import OnMalformed, Start, Subscription
    from shared.settings import Settings

API_TIMEOUT_S = 60.0  # a call's whole answer (a search's statement timeout is shorter)
TRANSFER_TIMEOUT_S = 3600.0  # an upload's answer, after its bytes (the server may be copying a large tree)


class ObsflowClient(UploadCalls, ProvenanceCalls, TransferCalls):
    """A site's ingest, catalog, transfer and scheduler APIs and its event log, with one bearer token.

        async with ObsflowClient.from_settings() as client:
            page = await client.search({"file_type": {"is": "uvh5"}})

    `site` is a Site, or the ingest service's URL (the others on the next ports, as `obsflow up` runs them). A call
    gives up after `timeout_s`; an upload waits up to `transfer_timeout_s` without a byte of answer once its bytes
    are sent (the server verifies and commits, or copies a local path, meanwhile).
    Calls return the API's models (shared/api); a refusal raises ClientError with the server's code and message,
    an unreachable or busy service ServerUnavailable.
    """

    def __init__(self, site: Site | str, token: str | None, *, timeout_s: float = API_TIMEOUT_S,
                 transfer_timeout_s: float = TRANSFER_TIMEOUT_S) -> None:
        self.site = site if isinstance(site, Site) else Site.at(site)
        self._transport = Transport(self.site, token, timeout_s=timeout_s, transfer_timeout_s=transfer_timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, token: str | None = None, *,
                      timeout_s: float = API_TIMEOUT_S, transfer_timeout_s: float = TRANSFER_TIMEOUT_S,
                      ) -> ObsflowClient:
        """The client of the site the settings describe (loaded from the environment and OBSFLOW_CONFIG_FILE when
        not given), with `token` or the one in $OBSFLOW_TOKEN or ~/.config/obsflow/token."""
        if settings is None:
            from shared.settings import load_settings

            settings = load_settings()
        return cls(Site.from_settings(settings), api_token(token), timeout_s=timeout_s,
                   transfer_timeout_s=transfer_timeout_s)

    async def __aenter__(self) -> ObsflowClient:
        await self._transport.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._transport.close()

    async def issue_token(self, name: str, password: str) -> TokenIssued:
        """Trade an account's password for an API token (as `obsflow accounts token NAME`; any service issues it):
        make a client with `token.token`. A wrong password is a ClientError 401, too many a 429 (wait)."""
        body = {"name": name, "password": password}
        return await self._transport.call("ingest", "POST", "/tokens", TokenIssued, json=body)

    def subscribe(self, pattern: str, *, start: Start | None = None,
                  on_malformed: OnMalformed | None = None) -> Subscription:
        """The site's events whose routing key matches `pattern` (`*.file.minted.#`, `karoo.job.failed.XRFI`), as
        an async iterator used within `async with`: live from now, or from `start` in the log ('first', 'last', an
        ISO time or datetime, an interval like '2h', an offset) and then live. The same as `obsflow events tail`."""
        from shared.client.events import Subscription  # the bus: imported by those who subscribe

        if self.site.amqp_url is None:
            raise ConfigurationError(self.site.amqp_problem or "this client knows no broker URL to read events "
                                     "from: give Site(amqp_url=...) or use ObsflowClient.from_settings()")
        return Subscription(self.site.amqp_url, self.site.bus_prefix, pattern, start=start,
                            max_event_bytes=self.site.max_event_bytes, on_malformed=on_malformed)
