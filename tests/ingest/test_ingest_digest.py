"""Directory digests: reproducible, sensitive to every byte, name and size, refusing symlinks."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from services.ingest.digest import (
    MANIFEST_HEADER,
    SymlinkInTree,
    TreeRefused,
    copy_tree_and_digest,
    digest_tree,
    size_and_checksum,
)
from services.ingest.onepass import checksum_file

TREE = {
    "ANTENNA/table.dat": b"antenna table",
    "ANTENNA/table.f0": b"\x00" * 1000,
    "table.dat": b"main table",
    "table.f1": os.urandom(70_000),
    "a.b": b"sorts between a and a/b",
    "a/b": b"nested",
    "SPECTRAL_WINDOW/sub/deep.bin": b"deep",
}
EMPTY_DIRS = ("FLAG_CMD", "SPECTRAL_WINDOW/empty")


def _build(root: Path, files: dict[str, bytes], order: Callable[[list[str]], list[str]]) -> Path:
    root.mkdir()
    for directory in order(list(EMPTY_DIRS)):
        (root / directory).mkdir(parents=True)
    for name in order(list(files)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(files[name])
    return root


def _forward(items: list[str]) -> list[str]:
    return items


def _backward(items: list[str]) -> list[str]:
    return list(reversed(items))


def test_digest_is_identical_across_runs_and_creation_orders(tmp_path: Path) -> None:
    first = _build(tmp_path / "first", TREE, _forward)
    second = _build(tmp_path / "second.ms", TREE, _backward)

    digest = digest_tree(first)
    assert digest_tree(first) == digest
    assert digest_tree(second) == digest
    assert digest.size == sum(len(data) for data in TREE.values())
    assert digest.file_count == len(TREE)
    assert digest.digest.startswith("xxh3-128:") and len(digest.digest) == len("xxh3-128:") + 32


def test_digest_follows_the_documented_manifest(tmp_path: Path) -> None:
    import xxhash

    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"hello")
    file_checksum = checksum_file(root / "d" / "f")
    manifest = MANIFEST_HEADER + b"D\0d\0\n" + b"F\0d/f\0" + b"5\0" + file_checksum.encode() + b"\n"
    assert digest_tree(root).digest == f"xxh3-128:{xxhash.xxh3_128(manifest).hexdigest()}"


def _flip_byte(root: Path) -> None:
    path = root / "table.f1"
    data = bytearray(path.read_bytes())
    data[12_345] ^= 0x01
    path.write_bytes(bytes(data))


def _rename_file(root: Path) -> None:
    (root / "table.dat").rename(root / "table.dat2")


def _move_file(root: Path) -> None:
    (root / "table.dat").rename(root / "ANTENNA" / "table.dat.moved")
    (root / "ANTENNA" / "table.dat").rename(root / "table.dat")


def _grow_file(root: Path) -> None:
    with (root / "a" / "b").open("ab") as handle:
        handle.write(b"\0")


def _remove_empty_dir(root: Path) -> None:
    (root / "FLAG_CMD").rmdir()


def _add_empty_file(root: Path) -> None:
    (root / "EMPTY").write_bytes(b"")


@pytest.mark.parametrize(
    "change", [_flip_byte, _rename_file, _move_file, _grow_file, _remove_empty_dir, _add_empty_file]
)
def test_digest_changes_when_anything_changes(tmp_path: Path, change: Callable[[Path], None]) -> None:
    root = _build(tmp_path / "tree", TREE, _forward)
    before = digest_tree(root).digest
    change(root)
    assert digest_tree(root).digest != before


def test_copy_tree_reproduces_tree_and_digest(tmp_path: Path) -> None:
    src = _build(tmp_path / "src", TREE, _forward)
    copied = copy_tree_and_digest(src, tmp_path / "dst", bufsize=4096)

    assert copied == digest_tree(src)
    assert digest_tree(tmp_path / "dst") == copied
    assert (tmp_path / "dst" / "SPECTRAL_WINDOW" / "empty").is_dir()
    assert (tmp_path / "dst" / "table.f1").read_bytes() == TREE["table.f1"]
    assert size_and_checksum(tmp_path / "dst") == (copied.size, copied.digest)


def test_symlinks_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    src = _build(tmp_path / "src", TREE, _forward)
    (src / "ANTENNA" / "link").symlink_to(src / "table.dat")
    with pytest.raises(SymlinkInTree, match="symbolic link"):
        digest_tree(src)
    with pytest.raises(SymlinkInTree, match="symbolic link"):
        copy_tree_and_digest(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_a_symlinked_root_and_a_fifo_are_refused(tmp_path: Path) -> None:
    src = _build(tmp_path / "src", TREE, _forward)
    (tmp_path / "link").symlink_to(src)
    with pytest.raises(SymlinkInTree):
        digest_tree(tmp_path / "link")
    os.mkfifo(src / "pipe")
    with pytest.raises(TreeRefused, match="not a regular file or directory"):
        digest_tree(src)


def test_failed_tree_copy_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from services.ingest import digest

    src = _build(tmp_path / "src", TREE, _forward)
    real_copy = digest.copy_and_checksum
    calls = []

    def copy_until_disk_full(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(digest, "copy_and_checksum", copy_until_disk_full)
    with pytest.raises(OSError, match="No space left"):
        copy_tree_and_digest(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_single_file_size_and_checksum(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    assert size_and_checksum(path) == (5, checksum_file(path))
    with pytest.raises(TreeRefused, match="not a directory"):
        digest_tree(path)
