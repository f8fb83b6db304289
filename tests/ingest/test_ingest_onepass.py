"""One-pass copy and checksum: the figures equal those of xxhash/hashlib computed separately."""

import hashlib
import mmap
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import xxhash

from services.ingest.names import FileTooLarge
from services.ingest.onepass import (
    ChecksummingWriter,
    CopyTargetExists,
    InvalidChecksum,
    WriterClosed,
    checksum_file,
    copy_and_checksum,
    parse_checksum,
    read_checksums,
)


def _payload(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize("size", [0, 1, 4095, 65536, 3 * 65536 + 17])
def test_copy_checksums_equal_separately_computed_ones(tmp_path: Path, size: int) -> None:
    data = _payload(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    dst = tmp_path / "dst.bin"

    result = copy_and_checksum(src, dst, algorithms=("xxh3-128", "md5"), bufsize=65536)

    assert dst.read_bytes() == data
    assert result.size == size
    assert result.checksums == {
        "xxh3-128": f"xxh3-128:{xxhash.xxh3_128(data).hexdigest()}",
        "md5": f"md5:{hashlib.md5(data).hexdigest()}",
    }
    assert result.checksum == result.checksums["xxh3-128"]
    assert checksum_file(dst) == result.checksums["xxh3-128"]
    assert checksum_file(dst, "md5") == result.checksums["md5"]


def test_default_is_xxh3_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"obsflow")
    result = copy_and_checksum(src, tmp_path / "dst")
    assert list(result.checksums) == ["xxh3-128"]
    assert read_checksums(src).checksums == result.checksums


def test_copy_refuses_to_overwrite_and_keeps_the_existing_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"new")
    dst = tmp_path / "dst"
    dst.write_bytes(b"old")
    with pytest.raises(CopyTargetExists, match="refusing to overwrite"):
        copy_and_checksum(src, dst)
    assert dst.read_bytes() == b"old"


def test_failed_copy_leaves_no_partial_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        copy_and_checksum(tmp_path / "missing", tmp_path / "dst")
    with pytest.raises(InvalidChecksum, match="supported are"):
        copy_and_checksum(tmp_path / "missing", tmp_path / "dst", algorithms=("sha1",))
    assert list(tmp_path.iterdir()) == []


def test_streaming_writer_equals_file_copy(tmp_path: Path) -> None:
    data = _payload(1_000_003)
    src = tmp_path / "src"
    src.write_bytes(data)
    copied = copy_and_checksum(src, tmp_path / "copied", algorithms=("xxh3-128", "md5"))

    with ChecksummingWriter(tmp_path / "streamed", algorithms=("xxh3-128", "md5")) as writer:
        for start in range(0, len(data), 12_345):
            writer.write(data[start : start + 12_345])
        streamed = writer.finish()

    assert streamed == copied
    assert (tmp_path / "streamed").read_bytes() == data


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = ChecksummingWriter(tmp_path / "partial")
    writer.write(b"x" * 1000)
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WriterClosed):
        writer.write(b"more")


def test_exception_inside_writer_block_aborts(tmp_path: Path) -> None:
    with pytest.raises(ConnectionResetError), ChecksummingWriter(tmp_path / "partial") as writer:
        writer.write(b"half an upload")
        raise ConnectionResetError("client went away")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_more_than_max_bytes_and_removes_the_file(tmp_path: Path) -> None:
    writer = ChecksummingWriter(tmp_path / "upload", max_bytes=10)
    writer.write(b"0123456789")
    with pytest.raises(FileTooLarge, match="10 bytes"):
        writer.write(b"!")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text",
    [
        "xxh3-128:" + "0" * 32,
        "md5:" + "abcdef0123456789" * 2,
    ],
)
def test_parse_checksum_accepts_the_two_forms(text: str) -> None:
    checksum = parse_checksum(text)
    assert str(checksum) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" * 32,
        "xxh3-128:" + "0" * 31,
        "xxh3-128:" + "0" * 33,
        "xxh3-128:" + "G" * 32,
        "XXH3-128:" + "0" * 32,
        "md5:" + "A" * 32,
        "sha256:" + "0" * 64,
        "md5: " + "0" * 32,
        "md5:" + "0" * 32 + "\n",
    ],
)
def test_parse_checksum_refuses_anything_else_clearly(text: str) -> None:
    with pytest.raises(InvalidChecksum, match="expected 'xxh3-128:<32 lowercase hex digits>'"):
        parse_checksum(text)


def test_streaming_many_chunks_past_the_writeback_threshold(tmp_path: Path) -> None:
    data = _payload(9 * 1024 * 1024 + 5)
    with ChecksummingWriter(tmp_path / "streamed") as writer:
        for start in range(0, len(data), 1024 * 1024):
            writer.write(memoryview(data)[start : start + 1024 * 1024])
        streamed = writer.finish()
    assert streamed.size == len(data)
    assert streamed.checksum == f"xxh3-128:{xxhash.xxh3_128(data).hexdigest()}"


def test_batched_durability_copy_without_fsync_then_fsync(tmp_path: Path) -> None:
    from services.ingest.onepass import fsync_directory, fsync_file

    src = tmp_path / "src"
    src.write_bytes(b"small file")
    result = copy_and_checksum(src, tmp_path / "dst", fsync=False)
    fsync_file(tmp_path / "dst")
    fsync_directory(tmp_path)
    assert result == read_checksums(tmp_path / "dst")


def _filesystems(tmp_path: Path) -> list[Path]:
    """The test's own directory and, where there is one, a tmpfs (another filesystem's direct I/O rules)."""
    places = [tmp_path / "disk"]
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        places.append(Path(tempfile.mkdtemp(dir="/dev/shm")))
    for place in places:
        place.mkdir(exist_ok=True)
    return places


@pytest.mark.parametrize("size", [0, 4095, 4096, 4097, 8 * 1024 * 1024, 8 * 1024 * 1024 + 4095, 17 * 1024 * 1024 + 3])
def test_direct_copy_is_byte_exact_at_every_block_boundary(tmp_path: Path, size: int) -> None:
    data = _payload(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    for place in _filesystems(tmp_path):
        try:
            result = copy_and_checksum(src, place / "copy")
            assert (place / "copy").read_bytes() == data
            assert result.size == size and result.checksum == f"xxh3-128:{xxhash.xxh3_128(data).hexdigest()}"
        finally:
            shutil.rmtree(place)


@pytest.mark.parametrize("chunk", [1, 4095, 1_000_003, 8 * 1024 * 1024 + 1])
def test_streaming_writer_is_byte_exact_across_its_buffer(tmp_path: Path, chunk: int) -> None:
    data = _payload(8 * 1024 * 1024 * 2 + 12_345) if chunk > 1 else _payload(20_000)
    for place in _filesystems(tmp_path):
        try:
            with ChecksummingWriter(place / "streamed", max_bytes=len(data)) as writer:
                for start in range(0, len(data), chunk):
                    writer.write(data[start : start + chunk])
                streamed = writer.finish()
            assert (place / "streamed").read_bytes() == data
            assert streamed.size == len(data)
            assert streamed.checksum == f"xxh3-128:{xxhash.xxh3_128(data).hexdigest()}"
        finally:
            shutil.rmtree(place)


def test_a_direct_write_the_kernel_refuses_falls_back_to_the_page_cache(tmp_path: Path) -> None:
    from services.ingest.onepass import _set_direct, _write_blocks

    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        if not _set_direct(fd, True):
            pytest.skip("this filesystem does no direct I/O: nothing to fall back from")
        buffer = mmap.mmap(-1, 3 * 4096)
        data = _payload(2 * 4096 + 7)
        buffer[1 : 1 + len(data)] = data
        misaligned = memoryview(buffer)[1 : 1 + len(data)]  # O_DIRECT needs aligned memory: EINVAL
        assert _write_blocks(fd, misaligned, direct=True) is False
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data
