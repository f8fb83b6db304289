"""The test link itself: it forwards, a reset cuts and refuses, a blackhole holds the bytes until restored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.sites.link import link_to


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _round_trip(port: int, data: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(data)), 5)
    finally:
        writer.close()


async def test_a_reset_closes_every_connection_and_refuses_new_ones_until_restored(echo_port: int) -> None:
    async with link_to(echo_port) as link:
        assert link.port != echo_port and await _round_trip(link.port) == b"ping"
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
        link.cut("reset")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)  # the open connection was reset
        writer.close()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _round_trip(link.port)  # a new one is refused
        link.restore()
        assert await _round_trip(link.port, b"back") == b"back"


async def test_a_blackhole_keeps_connections_open_forwards_nothing_and_delivers_once_restored(echo_port: int) -> None:
    async with link_to(echo_port) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
        link.cut("blackhole")
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):  # a bounded wait for something that must not happen
            await asyncio.wait_for(reader.readexactly(4), 1.0)
        assert link.open_connections == 1 and not writer.is_closing()
        link.restore()
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
        writer.close()
