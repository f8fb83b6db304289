"""A small client of the catalog's HTTP API for the command line: base URL and token from the settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp

from shared.errors import ObsflowError
from shared.settings import Settings

TOKEN_FILE = Path("~/.config/obsflow/token")


class CatalogRequestError(ObsflowError):
    """The catalog refused a request or could not be reached; the message says why and what to do."""


def catalog_base_url(settings: Settings) -> str:
    """http://<http_host>:<catalog port>."""
    return f"http://{settings.http_host}:{settings.http_port('catalog')}"


def api_token() -> str:
    """The token from OBSFLOW_TOKEN, else from ~/.config/obsflow/token."""
    token = os.environ.get("OBSFLOW_TOKEN", "").strip()
    if token:
        return token
    path = TOKEN_FILE.expanduser()
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as e:
        raise CatalogRequestError(f"cannot read the API token at {path}: {e}") from e
    if not token:
        raise CatalogRequestError(
            f"no API token: set OBSFLOW_TOKEN or write one to {TOKEN_FILE} (get one with `obsflow accounts token NAME`)"
        )
    return token


class CatalogClient:
    """GET and POST JSON to the catalog API; errors become CatalogRequestError with the server's message."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 60.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET /api/v1<path>."""
        return await self._call("GET", path, params=params)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /api/v1<path> with a JSON body."""
        return await self._call("POST", path, json=body or {})

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self._base_url}/api/v1{path}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout, headers=self._headers) as session,
                session.request(method, url, **kwargs) as response,
            ):
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise CatalogRequestError(
                f"cannot reach the catalog at {self._base_url} ({e.__class__.__name__}: {e}); is it running"
                " (`obsflow service catalog`), and are OBSFLOW_HTTP_HOST / OBSFLOW_HTTP_BASE_PORT right?"
            ) from e
        except ValueError as e:
            raise CatalogRequestError(f"the catalog at {self._base_url} answered {method} {path} with non-JSON") from e
        if status >= 400:
            raise CatalogRequestError(_describe_error(status, body))
        if not isinstance(body, dict):
            raise CatalogRequestError(f"the catalog answered {method} {path} with an unexpected body")
        return body


def _describe_error(status: int, body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code") == "invalid_search":
        return f"invalid search at {error.get('path')}: {error.get('message')}"
    if isinstance(error, dict):
        return f"{error.get('message')} (HTTP {status} {error.get('code')})"
    return f"the catalog answered HTTP {status}"
