"""The staging area: atomic commits that never overwrite, discards, expiry and crash-recovery sweeps."""

import os
import time
from pathlib import Path

import pytest

from services.ingest.digest import copy_tree_and_digest, digest_tree
from services.ingest.names import PathOutsideStore
from services.ingest.onepass import ChecksummingWriter, copy_and_checksum
from services.ingest.staging import AlreadyInStore, InvalidUploadId, StagingArea, rename_no_replace


@pytest.fixture
def area(tmp_path: Path) -> StagingArea:
    staging = StagingArea(tmp_path / "store")
    staging.ensure_layout()
    return staging


def _stage(area: StagingArea, upload_id: str, data: bytes = b"bytes") -> Path:
    path = area.new_upload(upload_id)
    path.write_bytes(data)
    return path


def test_new_upload_paths_are_unique_entries_of_staging(area: StagingArea) -> None:
    first = area.new_upload("0b6f6a1e-7c2d-4e8e-9a57-1f2e3d4c5b6a")
    second = area.new_upload("upload-2")
    assert first.parent == second.parent == area.staging_dir
    assert first != second
    assert not first.exists()


@pytest.mark.parametrize("upload_id", ["", "../main/x", "a/b", ".hidden", "x" * 129, "a b", "id\n"])
def test_bad_upload_ids_are_refused(area: StagingArea, upload_id: str) -> None:
    with pytest.raises(InvalidUploadId, match="invalid upload id"):
        area.new_upload(upload_id)


def test_new_upload_removes_the_leftover_of_an_earlier_attempt(area: StagingArea) -> None:
    _stage(area, "retry", b"half")
    path = area.new_upload("retry")
    assert not path.exists()
    copy_source = area.root / "source"
    copy_source.write_bytes(b"whole")
    copy_and_checksum(copy_source, path)
    assert path.read_bytes() == b"whole"


def test_commit_moves_the_file_into_main(area: StagingArea) -> None:
    staged = _stage(area, "u1", b"payload")
    final = area.commit(staged, "zen.2459122.30000.sum.uvh5")
    assert final == area.main_dir.resolve() / "zen.2459122.30000.sum.uvh5"
    assert final.read_bytes() == b"payload"
    assert not staged.exists()
    assert area.staged_entries() == []


def test_commit_refuses_to_overwrite_and_keeps_both_files(area: StagingArea) -> None:
    area.commit(_stage(area, "u1", b"original"), "zen.1")
    second = _stage(area, "u2", b"impostor")
    with pytest.raises(AlreadyInStore, match="never replaced"):
        area.commit(second, "zen.1")
    assert (area.main_dir / "zen.1").read_bytes() == b"original"
    assert second.read_bytes() == b"impostor"


def test_commit_refuses_to_replace_an_empty_directory(area: StagingArea) -> None:
    (area.main_dir / "book").mkdir()
    staged = area.new_upload("u1")
    staged.mkdir()
    with pytest.raises(AlreadyInStore):
        area.commit(staged, "book")


def test_rename_no_replace_refuses_existing_targets(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(AlreadyInStore):
        rename_no_replace(tmp_path / "a", tmp_path / "b")
    rename_no_replace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_bytes() == b"a" and (tmp_path / "b").read_bytes() == b"b"


def test_directory_upload_commits_with_one_rename(area: StagingArea, tmp_path: Path) -> None:
    source = tmp_path / "book.ms"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "table.f0").write_bytes(b"f0")
    staged = area.new_upload("dir-upload")
    copied = copy_tree_and_digest(source, staged)
    final = area.commit(staged, "book.ms")
    assert digest_tree(final) == copied
    assert area.staged_entries() == []


def test_commit_into_a_night_subdirectory_and_batched_sync(area: StagingArea) -> None:
    finals = [
        area.commit(_stage(area, f"u{index}"), f"2459122/zen.2459122.{index}", sync=False) for index in range(3)
    ]
    area.sync()
    assert all(final.parent == area.main_dir.resolve() / "2459122" for final in finals)


@pytest.mark.parametrize("name", ["../escape", "/abs", "..", "", "link/x"])
def test_commit_refuses_paths_leaving_main(area: StagingArea, name: str) -> None:
    (area.main_dir / "link").symlink_to(area.root)
    staged = _stage(area, "u1")
    with pytest.raises(PathOutsideStore):
        area.commit(staged, name)
    assert staged.exists()
    assert not (area.root / "escape").exists()


def test_only_staged_entries_can_be_committed_or_discarded(area: StagingArea) -> None:
    outside = area.root / "not-staged"
    outside.write_bytes(b"x")
    with pytest.raises(PathOutsideStore, match="not an entry of the staging area"):
        area.commit(outside, "x")
    with pytest.raises(PathOutsideStore):
        area.discard(area.main_dir)
    with pytest.raises(PathOutsideStore):
        area.discard(area.staging_dir / "..")
    assert outside.exists() and area.main_dir.is_dir()


def test_commit_of_nothing_says_so(area: StagingArea) -> None:
    with pytest.raises(FileNotFoundError, match="nothing staged"):
        area.commit(area.new_upload("never-written"), "x")


def test_discard_removes_files_and_trees(area: StagingArea) -> None:
    file_upload = _stage(area, "file")
    tree_upload = area.new_upload("tree")
    (tree_upload / "a" / "b").mkdir(parents=True)
    (tree_upload / "a" / "b" / "c").write_bytes(b"c")
    area.discard(file_upload)
    area.discard(tree_upload)
    area.discard(tree_upload)
    assert area.staged_entries() == []


def test_aborted_stream_leaves_nothing_in_staging(area: StagingArea) -> None:
    with pytest.raises(ConnectionResetError), ChecksummingWriter(area.new_upload("stream")) as writer:
        writer.write(b"partial")
        raise ConnectionResetError
    assert area.staged_entries() == []


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for parent, dirs, files in os.walk(path) if path.is_dir() else [(str(path.parent), [], [path.name])]:
        for name in (*dirs, *files):
            os.utime(os.path.join(parent, name), (then, then))
    os.utime(path, (then, then))


def test_expire_removes_only_abandoned_uploads(area: StagingArea) -> None:
    old_file = _stage(area, "old-file")
    old_tree = area.new_upload("old-tree")
    (old_tree / "sub").mkdir(parents=True)
    (old_tree / "sub" / "f").write_bytes(b"f")
    busy_tree = area.new_upload("busy-tree")
    (busy_tree / "sub").mkdir(parents=True)
    (busy_tree / "sub" / "growing").write_bytes(b"g")
    fresh = _stage(area, "fresh")
    for path in (old_file, old_tree, busy_tree):
        _age(path, 7200)
    os.utime(busy_tree / "sub" / "growing")  # a deep file still being written keeps its tree alive

    expired = area.expire(older_than_s=3600)

    assert sorted(expired) == sorted([old_file, old_tree])
    assert sorted(area.staged_entries()) == sorted([busy_tree, fresh])


def test_expire_with_an_explicit_clock(area: StagingArea) -> None:
    staged = _stage(area, "u1")
    assert area.expire(older_than_s=60, now=time.time()) == []
    assert area.expire(older_than_s=60, now=time.time() + 61) == [staged]


def test_sweep_orphans_removes_only_unknown_uploads(area: StagingArea) -> None:
    known = _stage(area, "known")
    orphan_file = _stage(area, "crashed-mid-copy")
    orphan_tree = area.new_upload("crashed-tree")
    (orphan_tree / "half").mkdir(parents=True)
    committed = area.commit(_stage(area, "done"), "zen.done")

    removed = area.sweep_orphans({"known", "done"})

    assert sorted(removed) == sorted([orphan_file, orphan_tree])
    assert area.staged_entries() == [known]
    assert committed.exists()
