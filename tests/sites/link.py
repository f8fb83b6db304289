"""A network link between two sites that a test can cut for real: a TCP proxy on 127.0.0.1 to a target port.

`cut("reset")` closes every connection with a reset and refuses new ones (a peer that went away, a firewall that
rejects); `cut("blackhole")` keeps the sockets open and forwards nothing either way (a dropped link: only
heartbeats and timeouts notice it); `restore()` lets bytes flow again (what a blackhole held is delivered then, as
TCP would after the link returns, unless an end gave up meanwhile). Only the proxy's own port is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from typing import Literal

CutMode = Literal["reset", "blackhole"]
_CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN: what a refused or broken connection looks like to its end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Link:
    """A TCP proxy from a free port on 127.0.0.1 to `target_host:target_port`, cut and restored at will."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.state: Literal["up", "reset", "blackhole"] = "up"
        self.connections_accepted = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._corruptions: list[tuple[bytes, bytes]] = []  # (what, into): each replaced once, towards the target
        self.corrupted = 0

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 (`port`)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self, mode: CutMode) -> None:
        """Cut the link: `reset` every connection and refuse new ones, or `blackhole` them (nothing forwarded)."""
        self.state = mode
        self._flowing.clear()
        if mode == "reset":
            self._close_all()

    def restore(self) -> None:
        """Let bytes flow again and accept new connections."""
        self.state = "up"
        self._flowing.set()

    def corrupt_once(self, what: bytes, into: bytes) -> None:
        """Damage the next bytes towards the target that contain `what` (within one read): they pass as `into`, of
        the same length: a bit flipped on the way, which TCP's checksum did not catch."""
        if len(what) != len(into):
            raise ValueError("a corruption keeps the length")
        self._corruptions.append((what, into))

    def _damaged(self, data: bytes) -> bytes:
        for index, (what, into) in enumerate(self._corruptions):
            if what in data:
                del self._corruptions[index]
                self.corrupted += 1
                return data.replace(what, into, 1)
        return data

    def _close_all(self) -> None:
        for client, upstream in list(self._pairs):
            _reset(client)
            _reset(upstream)
        self._pairs.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state == "reset":
            _reset(writer)  # refused: the connection is reset at once
            return
        self.connections_accepted += 1
        await self._flowing.wait()  # a blackholed link: the connection hangs, as a SYN into nowhere would
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        pumps = [asyncio.create_task(self._pump(reader, up_writer, pair, towards_target=True)),
                 asyncio.create_task(self._pump(up_reader, writer, pair))]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            self._pairs.discard(pair)
            for w in pair:
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter], *, towards_target: bool = False) -> None:
        try:
            while True:
                await self._flowing.wait()  # blackholed: neither read nor write; the bytes wait in the sockets
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                if pair not in self._pairs:
                    return  # reset meanwhile
                writer.write(self._damaged(data) if towards_target and self._corruptions else data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the other end went away: the pair closes
        finally:
            for w in pair:
                if pair in self._pairs:
                    w.close()
            self._pairs.discard(pair)


@contextlib.asynccontextmanager
async def link_to(target_port: int) -> AsyncIterator[Link]:
    """A started link to `target_port` on 127.0.0.1, stopped afterwards."""
    if target_port <= 0:
        raise ValueError("a link needs the port it leads to")
    link = Link(target_port)
    await link.start()
    try:
        yield link
    finally:
        await link.stop()
