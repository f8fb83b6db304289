"""Where a source may be read from (minting.locate_source, pure) and how it is read (sources: beneath its root).

A source swapped for a link between the probe and the copy, or a tree entry swapped between the walk and the read,
is refused: the copy reads only through descriptors it opened beneath the root itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.ingest import digest
from services.ingest.digest import SymlinkInTree, TreeRefused, copy_tree_and_digest, digest_tree
from services.ingest.minting import Refusal, RefusalCode, locate_source
from services.ingest.onepass import MD5, XXH3_128, checksum_file
from services.ingest.sources import Probed, UnreadableSource, copy_source, probe_source, refusal_for
from shared.safe_paths import Beneath, UnsafePath

ROOTS = ("/data/incoming", "/srv/raw")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/incoming/zen.uvh5", Beneath("/data/incoming", "zen.uvh5")),
        ("/srv/raw/night/zen.ms", Beneath("/srv/raw", "night/zen.ms")),
        ("/data/incoming//a/./b", Beneath("/data/incoming", "a/./b")),
    ],
)
def test_paths_beneath_a_source_root_are_located(path: str, expected: Beneath) -> None:
    assert locate_source(path, ROOTS) == expected


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/etc/shadow", "outside the directories this site ingests from"),
        ("/data/incomingX/f", "outside the directories"),
        ("/data/incoming", "is a source root itself"),
        ("/data/incoming/", "is a source root itself"),
        ("/data/incoming/../../etc/shadow", "'..'"),
        ("relative/zen.uvh5", "must be absolute"),
        ("", "empty"),
        ("/data/incoming/a\0b", "NUL"),
        ("/data/incoming/" + "x/" * (8 * 1024 * 1024), "longer than the 4095 bytes"),  # a 16 MiB path
    ],
)
def test_other_paths_are_refused_saying_why(path: str, words: str) -> None:
    refusal = locate_source(path, ROOTS)
    assert isinstance(refusal, Refusal) and refusal.code is RefusalCode.INVALID_PATH
    assert words in refusal.reason and len(refusal.reason) < 1000  # a 16 MiB path is not repeated back
    if "outside" in words or "root itself" in words:
        assert "[services.ingest] source_roots" in refusal.reason


def test_no_source_roots_refuses_every_path_and_names_the_setting() -> None:
    refusal = locate_source("/data/incoming/zen.uvh5", ())
    assert isinstance(refusal, Refusal) and "reads local paths from no directory" in refusal.reason
    assert "[services.ingest] source_roots" in refusal.reason


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "incoming"
    (r / "tree" / "sub").mkdir(parents=True)
    (r / "zen.uvh5").write_bytes(b"observation")
    (r / "tree" / "sub" / "table").write_bytes(b"table")
    (tmp_path / "secret").write_bytes(b"never read")
    return r


def test_probe_and_copy_a_file_and_a_tree(root: Path, tmp_path: Path) -> None:
    file = Beneath(str(root), "zen.uvh5")
    assert probe_source(file) == Probed(is_directory=False, size=11)
    copied = copy_source(file, tmp_path / "staged", (XXH3_128, MD5), direct=False)
    assert copied.size == 11 and not copied.is_directory and set(copied.checksums) == {XXH3_128, MD5}
    assert copied.checksums[XXH3_128] == checksum_file(root / "zen.uvh5")
    tree = Beneath(str(root), "tree")
    assert probe_source(tree) == Probed(is_directory=True, size=0)
    copied_tree = copy_source(tree, tmp_path / "staged-tree", (XXH3_128,), direct=False)
    assert copied_tree.is_directory and copied_tree.checksums[XXH3_128] == digest_tree(root / "tree").digest
    with pytest.raises(UnreadableSource, match="md5 applies to single files only"):
        copy_source(tree, tmp_path / "staged-md5", (XXH3_128, MD5), direct=False)


def test_a_file_swapped_for_a_link_after_the_probe_is_refused_by_the_copy(root: Path, tmp_path: Path) -> None:
    source = Beneath(str(root), "zen.uvh5")
    assert isinstance(probe_source(source), Probed)
    (root / "zen.uvh5").unlink()
    (root / "zen.uvh5").symlink_to(tmp_path / "secret")  # the swap an attacker races for
    with pytest.raises(UnsafePath, match="symbolic link") as refused:
        copy_source(source, tmp_path / "staged", (XXH3_128,), direct=False)
    assert not (tmp_path / "staged").exists()
    refusal = refusal_for(source, refused.value)
    assert refusal is not None and refusal.code is RefusalCode.INVALID_PATH and str(source) in refusal.reason


def test_a_tree_entry_swapped_for_a_link_after_the_walk_is_never_read(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walked = digest.list_tree

    def walk_then_swap(*args: object, **kwargs: object) -> list[digest.TreeEntry]:
        entries = walked(*args, **kwargs)  # type: ignore[arg-type]
        (root / "tree" / "sub" / "table").unlink()
        (root / "tree" / "sub" / "table").symlink_to(tmp_path / "secret")
        return entries

    monkeypatch.setattr(digest, "list_tree", walk_then_swap)
    with pytest.raises(SymlinkInTree, match="symbolic link"):
        copy_tree_and_digest(root / "tree", tmp_path / "staged")
    assert not (tmp_path / "staged").exists(), "a refused copy leaves nothing"


def test_a_directory_swapped_for_a_link_after_the_walk_is_never_entered(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walked = digest.list_tree
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "table").write_bytes(b"never read")

    def walk_then_swap(*args: object, **kwargs: object) -> list[digest.TreeEntry]:
        entries = walked(*args, **kwargs)  # type: ignore[arg-type]
        os.rename(root / "tree" / "sub", tmp_path / "moved")
        (root / "tree" / "sub").symlink_to(tmp_path / "elsewhere")
        return entries

    monkeypatch.setattr(digest, "list_tree", walk_then_swap)
    with pytest.raises(SymlinkInTree, match="'sub'.* is a symbolic link"):
        digest_tree(root / "tree")


@pytest.mark.parametrize("kind", ["fifo", "missing", "root-missing"])
def test_what_cannot_be_read_is_a_refusal(root: Path, tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(root / "pipe")
        source, code = Beneath(str(root), "pipe"), RefusalCode.INVALID_PATH
    elif kind == "missing":
        source, code = Beneath(str(root), "nothing"), RefusalCode.NOT_FOUND
    else:
        source, code = Beneath(str(tmp_path / "unmounted"), "zen.uvh5"), RefusalCode.NOT_FOUND
    refusal = probe_source(source)
    assert isinstance(refusal, Refusal) and refusal.code is code, refusal


def test_a_tree_holding_a_fifo_is_refused(root: Path) -> None:
    os.mkfifo(root / "tree" / "pipe")
    with pytest.raises(TreeRefused, match="not a regular file or directory"):
        digest_tree(root / "tree")
