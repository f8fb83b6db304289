"""The client's ingest calls against the running ingest service: uploads (with progress), files, bad paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from shared.api.ingest import IngestedFile, MintAnswer, UploadTicket
from shared.auth import Role
from shared.client import ClientError, LocalFileError
from tests.client.site import ClientSite
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_upload_reports_progress_and_returns_the_minted_file(client_site: ClientSite, tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024)  # three chunks: streamed, not sent from memory
    path = tmp_path / "zen.2459300.30000.sum.uvh5"
    path.write_bytes(data)
    seen: list[tuple[str, int, int]] = []
    async with client_site.client(Role.READ_APPEND, "alice") as client:
        document = await client.upload(path, file_type="uvh5", progress=lambda *p: seen.append(p))
        assert isinstance(document, IngestedFile)
        assert (document.name, document.size, document.uploader) == (path.name, len(data), "alice")
        assert document.checksum == f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"
        assert [i.store for i in document.instances] == ["main"]
        assert [p for p in seen if p[0] == "checksum"][-1] == ("checksum", len(data), len(data))
        sends = [p for p in seen if p[0] == "send"]
        assert len(sends) == 3 and sends[-1] == ("send", len(data), len(data))
        assert await client.file(path.name) == document
        again = await client.upload(path, file_type="uvh5")  # minted already with these bytes: nothing sent
        assert again.created_at == document.created_at

        async def catalogued() -> bool:
            try:
                return (await client.catalog_file(path.name)).n_instances == 1
            except ClientError as e:
                if e.status != 404:
                    raise
                return False  # not projected yet
        await wait_for(catalogued, timeout_s=30)


async def test_two_phase_calls_are_typed(client_site: ClientSite, tmp_path: Path) -> None:
    data = b"two phases"
    checksum = f"xxh3-128:{xxhash.xxh3_128_hexdigest(data)}"
    async with client_site.client(Role.READ_APPEND) as client:
        ticket = await client.announce("zen.2459300.40000.sum.uvh5", len(data), checksum, "uvh5")
        assert isinstance(ticket, UploadTicket) and ticket.method == "PUT" and ticket.checksum == checksum
        sent = await client.send(ticket.url, tmp_path / "unused", len(data), body=data)
        assert isinstance(sent, MintAnswer) and sent.created and sent.file.size == len(data)
        existing = await client.announce("zen.2459300.40000.sum.uvh5", len(data), checksum, "uvh5")
        assert isinstance(existing, MintAnswer) and existing.created is False
        with pytest.raises(ClientError) as conflict:
            await client.announce("zen.2459300.40000.sum.uvh5", 3, f"xxh3-128:{xxhash.xxh3_128_hexdigest(b'abc')}",
                                  "uvh5")
        assert (conflict.value.status, conflict.value.code) == (409, "name_conflict")


async def test_a_local_path_upload_and_unreadable_paths(client_site: ClientSite, tmp_path: Path) -> None:
    source = client_site.root / "sources" / "zen.2459300.50000.sum.uvh5"
    source.write_bytes(b"on the server's disk")
    async with client_site.client(Role.READ_APPEND) as client:
        document = await client.upload_local(source, file_type="uvh5", md5=True)
        assert document.size == 20 and (document.md5 or "").startswith("md5:")
        with pytest.raises(LocalFileError, match=r"cannot read .*/no/such/file.uvh5: No such file or directory"):
            await client.upload(tmp_path / "no" / "such" / "file.uvh5", file_type="uvh5")
        with pytest.raises(LocalFileError, match="is a directory: upload it with --local"):
            await client.upload(tmp_path, file_type="uvh5")
