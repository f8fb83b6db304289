"""What the ingest service may read: only paths beneath its source roots, never through a symlink (issue 8, item 2).

Each reproduction is what a read-append account did before the fix: mint /etc/shadow, the site's auth secret or
/proc/self/environ with `POST /api/v1/uploads/local`, or escape an allowed root through a symlink. Each is now a
clear 4xx, nothing is minted or staged, and the refusal is an `ingest.rejected` event; the announced-observation
path obeys the same rule.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.api.ingest import MintAnswer
from shared.auth import Principal, Role, issue_token
from shared.auth.secrets import site_secret
from shared.client import ClientError, ObsflowClient
from shared.runner import ServiceRunner
from shared.settings import Settings
from tests.ingest.service_support import (
    announce,
    announcement,
    counts,
    incoming,
    ingest_settings,
    outbox_events,
    rejection_codes,
    running_ingest,
    staged_entries,
    write_file,
)

pytestmark = pytest.mark.usefixtures("drop_schemas")
NAME = "zen.2459122.30000.sum.uvh5"


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def site(settings: Settings, store_root: Path) -> Settings:
    """A site as `make up` runs it: no source roots configured, the auth secret generated into the data dir."""
    return ingest_settings(settings, store_root).model_copy(update={"auth_secret": None})


@pytest.fixture
async def ingest(site: Settings) -> AsyncIterator[ServiceRunner]:
    async with running_ingest(site) as runner:
        yield runner


def _client(runner: ServiceRunner, role: Role = Role.READ_APPEND) -> ObsflowClient:
    token = issue_token(site_secret(runner.settings), Principal("mallory", role), 3600)
    return ObsflowClient(f"http://127.0.0.1:{runner.settings.http_port('ingest')}", token)


async def _refused_local(runner: ServiceRunner, path: str | Path, **body: Any) -> ClientError:
    async with _client(runner) as client:
        with pytest.raises(ClientError) as refused:
            await client._transport.call("ingest", "POST", "/uploads/local", MintAnswer,
                                         json={"path": str(path), "type": "uvh5", **body})
    return refused.value


def _secret_file(runner: ServiceRunner) -> Path:
    path = Path(runner.settings.data_dir) / f"{runner.settings.site}-auth-secret"
    assert path.read_text().strip() == site_secret(runner.settings), "the service generated its secret here"
    return path


async def test_the_default_source_root_is_under_the_data_directory_and_works(ingest: ServiceRunner) -> None:
    root = incoming(ingest.settings)
    assert root == Path(ingest.settings.data_dir) / "incoming" and root.is_dir(), "created at start-up"
    path = write_file(root / "night1" / NAME, b"correlator bytes")
    async with _client(ingest) as client:
        document = await client.upload_local(path, file_type="uvh5")
    assert document.size == 16 and document.uploader == "mallory"
    assert await counts(ingest.ctx.pool) == (1, 1, 0)


async def test_server_files_cannot_be_minted_by_a_read_append_account(ingest: ServiceRunner, store_root: Path) -> None:
    targets = ["/etc/shadow", str(_secret_file(ingest)), "/proc/self/environ", "/etc/passwd",
               f"{incoming(ingest.settings)}/../{ingest.settings.site}-auth-secret"]
    for target in targets:
        error = await _refused_local(ingest, target, name=NAME)
        assert (error.status, error.code) == (400, "invalid_path"), target
        assert "[services.ingest] source_roots" in str(error) or "'..'" in str(error), str(error)
    assert await counts(ingest.ctx.pool) == (0, 0, 0)
    assert staged_entries(store_root) == [] and list((store_root / "main").iterdir()) == []
    assert await rejection_codes(ingest.ctx.pool) == ["invalid_path"] * len(targets)


async def test_symlinks_inside_the_root_never_lead_out(ingest: ServiceRunner, store_root: Path) -> None:
    root = incoming(ingest.settings)
    (root / "shadow.uvh5").symlink_to("/etc/shadow")  # a symlink inside the root pointing out
    (root / "secret.uvh5").symlink_to(_secret_file(ingest))
    (root / "environ.uvh5").symlink_to("/proc/self/environ")
    (root / "night").symlink_to("/etc")  # a symlinked directory
    (root / "self").symlink_to("/proc/self")
    write_file(root / "real" / NAME, b"fine")
    (root / "inner.uvh5").symlink_to(root / "real" / NAME)  # even a link that stays inside is not followed
    paths = [root / "shadow.uvh5", root / "secret.uvh5", root / "environ.uvh5", root / "night" / "shadow",
             root / "self" / "environ", root / "inner.uvh5", root / "night"]
    for path in paths:
        error = await _refused_local(ingest, path, name=NAME)
        assert (error.status, error.code) == (400, "invalid_path"), path
        assert "symbolic link" in str(error), str(error)
    assert await counts(ingest.ctx.pool) == (0, 0, 0)
    assert staged_entries(store_root) == []
    assert await rejection_codes(ingest.ctx.pool) == ["invalid_path"] * len(paths)


async def test_a_symlink_inside_an_ingested_directory_is_refused(ingest: ServiceRunner, store_root: Path) -> None:
    root = incoming(ingest.settings)
    tree = root / "zen.2459122.30000.sum.ms"
    write_file(tree / "table.dat", b"table")
    (tree / "ANTENNA").mkdir()
    (tree / "ANTENNA" / "stolen").symlink_to("/etc/shadow")
    error = await _refused_local(ingest, tree, type="ms")
    assert (error.status, error.code) == (400, "invalid_path")
    assert "ANTENNA/stolen" in str(error) and "symbolic link" in str(error)
    (tree / "ANTENNA" / "stolen").unlink()
    (tree / "ANTENNA" / "etc").symlink_to("/etc")  # a symlinked directory inside the tree
    error = await _refused_local(ingest, tree, type="ms")
    assert (error.status, error.code) == (400, "invalid_path") and "ANTENNA/etc" in str(error)
    assert await counts(ingest.ctx.pool) == (0, 0, 0)
    assert staged_entries(store_root) == [] and list((store_root / "main").iterdir()) == []


async def test_fifos_and_devices_are_refused_without_blocking(ingest: ServiceRunner) -> None:
    root = incoming(ingest.settings)
    os.mkfifo(root / "pipe.uvh5")  # opening a FIFO for reading would wait for a writer forever
    error = await _refused_local(ingest, root / "pipe.uvh5")
    assert (error.status, error.code) == (400, "invalid_path") and "regular file" in str(error)
    assert await counts(ingest.ctx.pool) == (0, 0, 0)


async def test_no_source_roots_means_no_local_path_is_read(settings: Settings, store_root: Path) -> None:
    site = ingest_settings(settings, store_root, source_roots=[])
    async with running_ingest(site) as ingest:
        path = write_file(incoming(site) / NAME, b"bytes")  # even the default root is closed now
        error = await _refused_local(ingest, path)
        assert (error.status, error.code) == (400, "invalid_path")
        assert "reads local paths from no directory" in str(error) and "[services.ingest] source_roots" in str(error)
        assert await counts(ingest.ctx.pool) == (0, 0, 0)
        assert await rejection_codes(ingest.ctx.pool) == ["invalid_path"]


async def test_announced_paths_obey_the_same_rule(
    ingest: ServiceRunner, site: Settings, amqp, store_root: Path
) -> None:
    root = incoming(ingest.settings)
    good = write_file(root / NAME, b"announced bytes")
    (root / "link.uvh5").symlink_to("/etc/shadow")
    (root / "night").symlink_to("/etc")
    tree = root / "zen.2459122.30001.sum.ms"
    write_file(tree / "table.dat", b"t")
    (tree / "escape").symlink_to(_secret_file(ingest))
    # (A path longer than any Linux can open is not even an event: test_service_dead_letters.py.)
    events = [announcement(p, site=site.site, name=f"zen.2459122.3010{i}.sum.uvh5")
              for i, p in enumerate(["/etc/shadow", root / "link.uvh5", root / "night" / "shadow",
                                     "/proc/self/environ", str(_secret_file(ingest))])]
    events.append(announcement(tree, site=site.site, file_type="ms"))
    events.append(announcement(good, site=site.site))
    await announce(amqp, site, *events)
    await ingest.parts.work_consumers[0].drain(timeout_s=30)
    assert await counts(ingest.ctx.pool) == (1, 1, 0)
    assert (store_root / "main" / NAME).read_bytes() == b"announced bytes"
    rejected = {e.payload.path: e.payload for e in await outbox_events(ingest.ctx.pool, "ingest.rejected")}  # type: ignore[attr-defined]
    assert len(rejected) == 6 and {r.code for r in rejected.values()} == {"invalid_path"}
    assert "symbolic link" in rejected[str(root / "link.uvh5")].reason
    assert "symbolic link" in rejected[str(tree)].reason and "escape" in rejected[str(tree)].reason
    assert all(len(path or "") <= 4096 and len(r.reason) < 1000 for path, r in rejected.items()), "bounded events"
    assert staged_entries(store_root) == []
