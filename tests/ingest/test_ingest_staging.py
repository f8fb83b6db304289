"""The staging area: atomic commits that never overwrite, and removals that never reach outside the store."""

from pathlib import Path

import pytest

from services.ingest.digest import copy_tree_and_digest, digest_tree
from services.ingest.names import PathOutsideStore
from services.ingest.onepass import ChecksummingWriter, copy_and_checksum
from services.ingest.staging import AlreadyInStore, InvalidUploadId, StagingArea, UnsafeStore, rename_no_replace
from services.ingest.storage import commit_no_replace
from shared.safe_paths import UnsafePath, UnsafeRoot


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


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sibling of the store that links in the store point to: its canary must survive every removal."""
    directory = tmp_path / "outside"
    (directory / "victim").mkdir(parents=True)
    (directory / "canary").write_bytes(b"must survive")
    (directory / "victim" / "canary").write_bytes(b"must survive")
    return directory


def _survived(outside: Path) -> bool:
    return (outside / "canary").read_bytes() == (outside / "victim" / "canary").read_bytes() == b"must survive"


@pytest.mark.parametrize("root", ["", ".", "/", "store", "./store", "/tmp/.."])
def test_a_store_root_that_is_empty_slash_or_relative_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: str
) -> None:
    monkeypatch.chdir(tmp_path)  # relative roots would mean a store right here, with a leftover to remove
    (tmp_path / "store" / "staging" / "victim").mkdir(parents=True)
    (tmp_path / "store" / "staging" / "victim" / "canary").write_bytes(b"must survive")
    with pytest.raises(UnsafeRoot):
        StagingArea(Path(root)).new_upload("victim")
    assert (tmp_path / "store" / "staging" / "victim" / "canary").exists()


def test_a_staged_entry_that_is_a_link_is_removed_itself(area: StagingArea, outside: Path) -> None:
    (area.staging_dir / "linked-file").symlink_to(outside / "canary")
    (area.staging_dir / "linked-dir").symlink_to(outside / "victim")
    area.discard(area.staging_dir / "linked-file")
    assert area.new_upload("linked-dir") == area.staging_dir / "linked-dir"  # the leftover link is cleared
    assert area.staged_entries() == [] and _survived(outside)


def test_a_staged_tree_holding_links_out_is_removed_without_following_them(
    area: StagingArea, outside: Path
) -> None:
    tree = area.new_upload("tree")
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "out").symlink_to(outside)
    (tree / "canary").symlink_to(outside / "canary")
    area.discard(tree)
    assert area.staged_entries() == [] and _survived(outside)


def test_a_staging_directory_that_is_a_link_out_is_never_removed_from(tmp_path: Path, outside: Path) -> None:
    area = StagingArea(tmp_path / "store")
    area.root.mkdir()
    (area.root / "staging").symlink_to(outside)  # the staging area "is" a directory elsewhere
    with pytest.raises(UnsafeStore, match="'staging'.* is a symbolic link"):
        area.discard(area.staging_dir / "victim")
    with pytest.raises(UnsafeStore, match="make the store's staging/ and main/ real directories"):
        area.new_upload("victim")
    with pytest.raises(UnsafeStore):
        area.staged_entries()
    assert _survived(outside)


def test_an_unminted_leftover_in_main_is_removed_beneath_the_store(area: StagingArea, outside: Path) -> None:
    (area.main_dir / "zen.1").symlink_to(outside / "victim")  # a leftover that is a link: the link goes
    assert area.remove_unminted("zen.1") is True
    assert area.remove_unminted("zen.1") is False
    committed = commit_no_replace(area, _stage(area, "u1", b"fresh"), "zen.2")
    (area.main_dir / "zen.3").mkdir()  # a half-committed tree
    (area.main_dir / "zen.3" / "out").symlink_to(outside)
    assert commit_no_replace(area, _stage(area, "u2", b"new"), "zen.3").read_bytes() == b"new"
    assert committed.read_bytes() == b"fresh" and _survived(outside)
    for name in ("", ".", "../staging", "/etc/passwd"):
        with pytest.raises((PathOutsideStore, UnsafePath, UnsafeStore)):
            area.remove_unminted(name)
    assert area.main_dir.is_dir()


def test_a_main_area_that_is_a_link_out_is_never_removed_from(tmp_path: Path, outside: Path) -> None:
    area = StagingArea(tmp_path / "store")
    (area.root / "staging").mkdir(parents=True)
    (area.root / "main").symlink_to(outside)
    with pytest.raises(UnsafeStore):
        area.remove_unminted("victim")
    assert _survived(outside)


def test_a_store_whose_root_is_missing_has_nothing_staged(tmp_path: Path) -> None:
    assert StagingArea(tmp_path / "unmounted").staged_entries() == []
