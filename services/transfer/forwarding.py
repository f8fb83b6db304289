"""Asking a via peer to send a file it holds on to a destination (`POST /api/v1/forwards` at the peer)."""

from __future__ import annotations

import aiohttp

from services.transfer.peer_access import PeerSession, peer_token, transfer_url
from shared.errors import PermanentError, TransientError
from shared.settings import PeerSettings


class ForwardRefused(PermanentError):
    """The via peer refused to send the file on (the reason is its own words)."""


class PeerUnreachable(TransientError):
    """The peer's transfer service did not answer (the link is down, or it is restarting)."""


class Forwarder:
    """Posts forwarding requests to peers over one HTTP session."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self._session = PeerSession(aiohttp.ClientTimeout(total=timeout_s))

    async def forward(self, via: PeerSettings, file_name: str, destination: str) -> None:
        """`via` accepts to send `file_name` on to `destination` (idempotent at the peer)."""
        url = f"{transfer_url(via)}/api/v1/forwards"
        headers = {"Authorization": f"Bearer {peer_token(via)}"}
        try:
            async with self._session.get().post(url, json={"name": file_name, "destination": destination},
                                          headers=headers) as response:
                if response.status in (200, 201):
                    return
                text = (await response.text())[:500]
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise PeerUnreachable(f"{via.name}'s transfer service at {url} did not answer: {e}") from e
        if response.status >= 500 or response.status == 429:
            raise PeerUnreachable(f"{via.name} answered {response.status}: {text}")
        raise ForwardRefused(f"{via.name} refused to send {file_name} on to {destination} "
                             f"({response.status}): {text}")

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._session.close()
