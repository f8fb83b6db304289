"""How this site reaches a peer's services: their URLs, the token it holds there (read from a file, never
logged), and the HTTP session requests go out on."""

from __future__ import annotations

import aiohttp
from yarl import URL

from shared.errors import ConfigurationError
from shared.service_names import SERVICES
from shared.settings import PeerSettings


def ingest_url(peer: PeerSettings) -> str:
    """The peer's ingest service (its `http_url`)."""
    if not peer.http_url:
        raise ConfigurationError(f"peer {peer.name!r} has no http_url: set it in its [[peers]] table")
    return peer.http_url.rstrip("/")


def transfer_url(peer: PeerSettings) -> str:
    """The peer's transfer service: `transfer_url`, else the port after its ingest's by the services' order."""
    if peer.transfer_url:
        return peer.transfer_url.rstrip("/")
    base = URL(ingest_url(peer))
    if base.port is None:
        raise ConfigurationError(f"peer {peer.name!r}: give transfer_url (http_url {base} names no port)")
    return str(base.with_port(base.port + SERVICES.index("transfer") - SERVICES.index("ingest"))).rstrip("/")


def peer_token(peer: PeerSettings) -> str:
    """The token this site uses at `peer`, from its token_file; ConfigurationError saying what to fix."""
    if peer.token_file is None:
        raise ConfigurationError(f"peer {peer.name!r} has no token_file: create an account with the read-append role "
                                 f"at {peer.name}, put a token of it in a file here and name it in [[peers]]")
    try:
        token = peer.token_file.read_text().strip()
    except OSError as e:
        raise ConfigurationError(f"cannot read the token file of peer {peer.name!r} ({peer.token_file}): "
                                 f"{e.strerror}") from e
    if not token:
        raise ConfigurationError(f"the token file of peer {peer.name!r} ({peer.token_file}) is empty")
    return token


class PeerSession:
    """An HTTP session to peers, opened on first use (nothing at start-up) and closed at stop."""

    def __init__(self, timeout: aiohttp.ClientTimeout) -> None:
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        """The session, opened now if it is not yet."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        """Close it (it opens again if used after)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
