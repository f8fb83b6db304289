"""One HTTP session to a site's services: JSON in, API models out, refusals as ClientError."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import aiohttp
from pydantic import TypeAdapter, ValidationError

from shared.client.errors import ClientError, ServerUnavailable
from shared.client.site import Site

T = TypeVar("T")
API = "/api/v1"
HINTS = {
    "ingest": "`obsflow up`, or `obsflow service ingest`",
    "catalog": "`obsflow up`, or `obsflow service catalog`",
    "scheduler": "`obsflow up`, or `obsflow service scheduler`",
    "transfer": "`obsflow up`, or `obsflow service transfer`",
}


class Transport:
    """Requests to the site's services with one keep-alive session and a bearer token."""

    def __init__(self, site: Site, token: str | None, *, timeout_s: float, transfer_timeout_s: float) -> None:
        self.site = site
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10)
        # A transfer takes as long as its bytes take: bounded by silence, not by its total time.
        self.transfer_timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=transfer_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Open the session (done by `async with ObsflowClient(...)`)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session, for calls made outside `call` (a replica's streamed bytes: shared/client/replicas.py)."""
        if self._session is None:
            raise RuntimeError("the transport is not open: use the client as `async with ObsflowClient(...)`")
        return self._session

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, service: str, method: str, path: str, answer: type[T] | TypeAdapter[T],
                   **kwargs: Any) -> T:
        """`method` `path` (under /api/v1 unless it starts with it) on `service`; the answer parsed as `answer`."""
        if self._session is None:
            raise RuntimeError("use the client as `async with ObsflowClient(...) as client:`")
        base = self.site.url(service)
        url = f"{base}{path if path.startswith(API) else API + path}"
        try:
            async with self._session.request(method, url, **kwargs) as response:
                status, text = response.status, await response.text(errors="replace")
        except aiohttp.ConnectionTimeoutError as e:
            raise _unreachable(service, base, e) from e
        except TimeoutError as e:  # aiohttp's other timeouts: connected, and the answer took too long
            raise ServerUnavailable(f"the {service} service at {base} did not answer {method} {path} in time "
                                    f"({e.__class__.__name__}); it may be busy: try again shortly") from e
        except (aiohttp.ClientError, OSError) as e:
            raise _unreachable(service, base, e) from e
        body = _json(text)
        if status >= 400:
            raise _refusal(service, status, body, text)
        try:
            adapter = answer if isinstance(answer, TypeAdapter) else _adapter(answer)
            return adapter.validate_python(body)
        except ValidationError as e:
            raise ClientError(status, "unexpected_answer", f"the {service} service answered {method} {path} with "
                              f"a body this client cannot read ({e.error_count()} problems, first: "
                              f"{e.errors()[0]['msg']} at {_location(e)}); are the client and the site of the same "
                              "obsflow version?") from e


def _unreachable(service: str, base: str, error: BaseException) -> ServerUnavailable:
    return ServerUnavailable(
        f"cannot reach the {service} service at {base} ({error.__class__.__name__}: {error}); is it running "
        f"({HINTS.get(service, 'obsflow up')}), and are OBSFLOW_HTTP_HOST and OBSFLOW_HTTP_BASE_PORT right?")


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(answer: type[T]) -> TypeAdapter[T]:
    adapter = _ADAPTERS.get(answer)
    if adapter is None:
        adapter = _ADAPTERS[answer] = TypeAdapter(answer)  # made once per model: building one costs milliseconds
    return adapter


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _location(error: ValidationError) -> str:
    return ".".join(str(part) for part in error.errors()[0]["loc"]) or "the top"


def _refusal(service: str, status: int, body: Any, text: str) -> Exception:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        message = f"the {service} service answered HTTP {status}" + (f": {text[:200]}" if text else "")
        error = {"code": "http_error", "message": message}
    code, message = str(error.get("code", "error")), str(error.get("message", f"HTTP {status}"))
    details = {k: v for k, v in error.items() if k not in ("code", "message")}
    if status == 503:
        return ServerUnavailable(f"{message} (503 {code}); try again shortly", status=status, code=code)
    return ClientError(status, code, message, details)
