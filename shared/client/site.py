"""Where a site's HTTP APIs and its event log are, and the API token to use with them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from yarl import URL

from shared.client.errors import MissingToken
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from shared.settings import Settings

TOKEN_ENV = "OBSFLOW_TOKEN"
TOKEN_FILE = Path("~/.config/obsflow/token")
# The order `obsflow up` gives the services their ports in (http_base_port + index; shared/settings.py SERVICES).
SERVICE_ORDER = ("ingest", "catalog", "transfer", "scheduler", "monitor")
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Site:
    """The base URL of each service of one site, and how to read its event log (`amqp_url`, a reader's)."""

    ingest: str
    catalog: str
    scheduler: str
    amqp_url: str | None = None
    bus_prefix: str = "obsflow"
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    amqp_problem: str | None = None  # why there is no amqp_url (said when events are asked for)
    transfer: str | None = None  # default: the ingest URL's port + 2, as `obsflow up` runs it

    @classmethod
    def at(cls, base_url: str, *, amqp_url: str | None = None, bus_prefix: str = "obsflow") -> Site:
        """A site whose services listen on consecutive ports from `base_url`'s, as `obsflow up` runs them
        (ingest on the base port, catalog +1, transfer +2, scheduler +3)."""
        urls = _consecutive(base_url)
        return cls(urls["ingest"], urls["catalog"], urls["scheduler"], amqp_url=amqp_url, bus_prefix=bus_prefix,
                   transfer=urls["transfer"])

    @classmethod
    def from_settings(cls, settings: Settings) -> Site:
        """The site the settings describe: its HTTP host and ports, its bus, the `reader` account's broker URL."""
        from shared import credentials  # the settings' own helpers, imported only by callers that have settings

        def url(service: str) -> str:
            return f"http://{settings.http_host}:{settings.http_port(service)}"

        amqp_url, problem = None, None
        try:
            amqp_url = credentials.amqp_url(settings, "reader")
        except ConfigurationError as e:  # only event subscriptions need it: said when one is asked for
            problem = str(e)
        return cls(url("ingest"), url("catalog"), url("scheduler"), amqp_url=amqp_url, bus_prefix=settings.bus.prefix,
                   max_event_bytes=settings.bus.max_event_bytes, amqp_problem=problem, transfer=url("transfer"))

    def url(self, service: str) -> str:
        """The base URL of `service` (ingest, catalog, transfer or scheduler)."""
        if service == "transfer" and self.transfer is None:
            return _consecutive(self.ingest)["transfer"]
        return str(getattr(self, service))


def _consecutive(base_url: str) -> dict[str, str]:
    """Each service's URL, on consecutive ports from `base_url`'s (ingest's)."""
    base = URL(base_url.rstrip("/"))
    if base.port is None or base.host is None:
        raise ConfigurationError(f"{base_url!r} is not a service URL like http://127.0.0.1:8470")
    return {name: str(base.with_port(base.port + SERVICE_ORDER.index(name))) for name in SERVICE_ORDER}


def api_token(explicit: str | None = None) -> str:
    """`explicit`, else $OBSFLOW_TOKEN, else the contents of ~/.config/obsflow/token; MissingToken saying how to get
    one otherwise."""
    token = (explicit or os.environ.get(TOKEN_ENV, "")).strip()
    if token:
        return token
    path = TOKEN_FILE.expanduser()
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as e:
        raise MissingToken(f"cannot read the API token at {path}: {e.strerror}") from e
    if not token:
        raise MissingToken(f"no API token: set {TOKEN_ENV} (export {TOKEN_ENV}=$(obsflow accounts token NAME)) or "
                           f"write one to {TOKEN_FILE}")
    return token
