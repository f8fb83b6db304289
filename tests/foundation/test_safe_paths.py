"""shared.safe_paths: nothing is opened, walked or removed through a symlink, outside its root, or from a bad root.

Every resolution test runs twice: with openat2 (this kernel has it) and with the openat(O_NOFOLLOW) walk used where
openat2 is missing. Deletion tests point only at directories made here; a refusal that must come before any
filesystem call is proven with the filesystem calls made to fail, and with a root that would destroy a canary file
if the check were missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import safe_paths
from shared.safe_paths import (
    Beneath,
    UnsafePath,
    UnsafeRoot,
    check_root,
    open_beneath,
    open_root,
    relative_parts,
    remove_beneath,
    split_beneath,
    walk_beneath,
)


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(safe_paths, "_use_openat2", request.param == "openat2")
    return str(request.param)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sibling of the root holding what must never be read or removed."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_bytes(b"never read through a link")
    (directory / "canary").write_bytes(b"must survive")
    return directory


@pytest.fixture
def root(tmp_path: Path, outside: Path) -> Path:
    """A root with a file, a nested file, and links of every kind pointing out of it (or within it)."""
    r = tmp_path / "root"
    (r / "dir" / "sub").mkdir(parents=True)
    (r / "file").write_bytes(b"inside")
    (r / "dir" / "sub" / "nested").write_bytes(b"nested")
    (r / "link-out").symlink_to(outside / "secret")  # a symlinked file pointing out
    (r / "link-abs").symlink_to("/etc/passwd")  # an absolute symlink
    (r / "link-in").symlink_to("file")  # even a link that stays inside is not followed
    (r / "dir" / "linkdir").symlink_to(outside)  # a symlinked directory in the middle of a path
    (r / "dotdot").symlink_to("../outside/secret")
    return r


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _no_filesystem_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call that could touch the filesystem fails the test (proves a refusal happens before any)."""
    called: list[str] = []

    def tripwire(name: str):  # noqa: ANN202 (any signature)
        def trip(*args: object, **kwargs: object) -> None:
            called.append(name)
            raise AssertionError(f"{name} was called before the root was refused")
        return trip

    with monkeypatch.context() as m:
        for name in ("open", "stat", "lstat", "unlink", "rmdir", "scandir", "listdir"):
            m.setattr(os, name, tripwire(f"os.{name}"))
        m.setattr(shutil, "rmtree", tripwire("shutil.rmtree"))
        yield called


def test_this_kernel_resolves_with_openat2(root: Path) -> None:
    fd = open_root(root)
    try:
        opened = safe_paths._open_with_openat2(fd, ["file"], os.O_RDONLY)
    finally:
        os.close(fd)
    assert opened is not None, "openat2 should be available on this kernel (x86_64/aarch64, Linux >= 5.6)"
    assert _read(opened) == b"inside"


def test_a_file_beneath_the_root_is_opened_and_read(root: Path, resolution: str) -> None:
    assert _read(open_beneath(root, "file")) == b"inside"
    assert _read(open_beneath(root, "dir/sub/nested")) == b"nested"
    assert _read(open_beneath(str(root), "./dir//sub/./nested")) == b"nested"
    fd = open_beneath(root, "dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _read(open_beneath(fd, "sub/nested")) == b"nested"  # a descriptor is a root too
    finally:
        os.close(fd)


@pytest.mark.parametrize("relative, link", [
    ("link-out", "link-out"),  # a symlinked file pointing out of the root
    ("link-abs", "link-abs"),  # an absolute symlink
    ("link-in", "link-in"),  # a symlink that stays inside
    ("dotdot", "dotdot"),  # a relative symlink climbing out
    ("dir/linkdir/secret", "dir/linkdir"),  # a symlinked directory in the middle
    ("dir/linkdir", "dir/linkdir"),  # the symlinked directory itself
])
def test_no_symlink_is_followed(root: Path, resolution: str, relative: str, link: str) -> None:
    for flags in (os.O_RDONLY, os.O_RDONLY | os.O_DIRECTORY, os.O_PATH):
        with pytest.raises(UnsafePath, match=f"'{link}'( \\(on the way to '{relative}'\\))? is a symbolic link"):
            open_beneath(root, relative, flags)


@pytest.mark.parametrize("relative", ["../outside/secret", "dir/../../outside/secret", "..", "dir/.."])
def test_dotdot_is_refused_before_resolution(root: Path, resolution: str, relative: str) -> None:
    with pytest.raises(UnsafePath, match=r"'\.\.'"):
        open_beneath(root, relative)


def test_an_absolute_path_below_a_root_is_refused(root: Path, resolution: str) -> None:
    with pytest.raises(UnsafePath, match="absolute path"):
        open_beneath(root, "/etc/passwd")


@pytest.mark.parametrize("relative", ["self/environ", "thread-self/environ", "{pid}/fd/{fd}", "{pid}/root/etc/passwd",
                                      "{pid}/cwd", "{pid}/exe"])
def test_magic_links_under_proc_are_refused(resolution: str, relative: str, tmp_path: Path) -> None:
    held = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(UnsafePath, match="symbolic link"):
            open_beneath("/proc", relative.format(pid=os.getpid(), fd=held))
    finally:
        os.close(held)


@pytest.mark.parametrize("relative", ["", ".", "./", ".//."])
def test_the_root_itself_is_not_beneath_it(root: Path, resolution: str, relative: str) -> None:
    with pytest.raises(UnsafePath, match="names the root itself"):
        open_beneath(root, relative)


def test_a_missing_root_is_refused(tmp_path: Path, resolution: str) -> None:
    with pytest.raises(UnsafeRoot, match="does not exist"):
        open_beneath(tmp_path / "missing", "file")
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(UnsafeRoot, match="not a directory"):
        open_beneath(tmp_path / "plain", "file")


@pytest.mark.parametrize("bad_root, message", [
    ("", "empty"), (None, "empty"), (".", "relative"), ("relative/root", "relative"), ("/", "'/'"), ("//", "'/'"),
    ("/tmp/../", r"'\.\.'"), ("/a\0b", "NUL"),
])
def test_bad_roots_are_refused_before_any_filesystem_call(
    monkeypatch: pytest.MonkeyPatch, bad_root: str | None, message: str
) -> None:
    with _no_filesystem_calls(monkeypatch) as called:
        with pytest.raises(UnsafeRoot, match=message):
            open_beneath(bad_root, "etc/passwd")  # type: ignore[arg-type]
        with pytest.raises(UnsafeRoot, match=message):
            remove_beneath(bad_root, "etc/passwd")
    assert called == []


def test_a_16_mib_path_is_refused_without_a_system_call(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    huge = "a/" * (8 * 1024 * 1024)
    with _no_filesystem_calls(monkeypatch) as called:
        for call in (lambda: open_beneath(root, huge), lambda: remove_beneath(root, huge),
                     lambda: list(walk_beneath(root, huge))):
            with pytest.raises(UnsafePath, match="longer than the 4095 bytes"):
                call()
        with pytest.raises(UnsafeRoot, match="longer than"):
            check_root("/" + huge)
    assert called == []


def test_a_name_longer_than_the_filesystem_allows_is_refused(root: Path, resolution: str) -> None:
    with pytest.raises(UnsafePath, match="longer than the filesystem allows"):
        open_beneath(root, "x" * 300)


def test_missing_entries_and_files_in_the_middle_stay_ordinary_errors(root: Path, resolution: str) -> None:
    with pytest.raises(FileNotFoundError):
        open_beneath(root, "dir/nothing")
    with pytest.raises(NotADirectoryError):
        open_beneath(root, "file/below")


def test_check_root_accepts_only_configured_roots(tmp_path: Path) -> None:
    assert check_root(f"{tmp_path}/") == tmp_path
    assert check_root(tmp_path, [str(tmp_path), "/elsewhere"]) == tmp_path
    with pytest.raises(UnsafeRoot, match="not one of the configured roots"):
        check_root(tmp_path / "other", [tmp_path])
    with pytest.raises(UnsafeRoot, match=r"configured roots \(none\)"):
        check_root(tmp_path, [])


def test_split_beneath_finds_the_root_as_text() -> None:
    roots = ["/data/incoming", "/srv/raw/"]
    assert split_beneath("/data/incoming/zen.uvh5", roots) == Beneath("/data/incoming", "zen.uvh5")
    assert split_beneath("/srv/raw//night/x", roots) == Beneath("/srv/raw", "night/x")
    assert str(Beneath("/srv/raw", "night/x")) == "/srv/raw/night/x"
    for outside_path in ("/data/incoming", "/data/incoming/", "/data/incomingX/f", "/etc/shadow", "data/incoming/f"):
        assert split_beneath(outside_path, roots) is None
    assert split_beneath("/data/incoming/../../etc/shadow", roots) == Beneath("/data/incoming", "../../etc/shadow")
    with pytest.raises(UnsafePath, match=r"'\.\.'"):
        relative_parts("../../etc/shadow")  # what the caller does next


def test_walk_lists_links_without_entering_them(root: Path, resolution: str) -> None:
    entries = {e.relative: e for e in walk_beneath(root)}
    assert sorted(entries) == ["dir", "dir/linkdir", "dir/sub", "dir/sub/nested", "dotdot", "file", "link-abs",
                               "link-in", "link-out"]
    assert entries["dir"].is_directory and entries["dir/sub/nested"].is_file
    assert all(entries[name].is_symlink for name in ("dir/linkdir", "link-out", "link-abs", "link-in", "dotdot"))
    assert [e.relative for e in walk_beneath(root, "dir/sub")] == ["nested"]
    with pytest.raises(UnsafePath, match="symbolic link"):
        list(walk_beneath(root, "dir/linkdir"))


def test_walk_visits_parents_before_children(root: Path, resolution: str) -> None:
    seen: list[str] = []
    for entry in walk_beneath(root):
        parent = entry.relative.rpartition("/")[0]
        assert not parent or parent in seen
        seen.append(entry.relative)


# Removal


def test_remove_a_file_a_tree_and_nothing(root: Path, resolution: str) -> None:
    assert remove_beneath(root, "file", [root]) is True
    assert not (root / "file").exists()
    assert remove_beneath(root, "dir/sub") is True
    assert not (root / "dir" / "sub").exists() and (root / "dir").is_dir()
    assert remove_beneath(root, "dir/sub") is False
    assert remove_beneath(root, "nowhere/at/all") is False


def test_a_symlink_is_removed_itself_never_its_target(root: Path, outside: Path, resolution: str) -> None:
    assert remove_beneath(root, "link-out") is True
    assert remove_beneath(root, "dir/linkdir") is True  # a link to a directory: the link goes, not the tree
    assert remove_beneath(root, "link-abs") is True
    assert not os.path.lexists(root / "link-out") and not os.path.lexists(root / "dir" / "linkdir")
    assert (outside / "secret").read_bytes() and (outside / "canary").read_bytes() == b"must survive"
    assert Path("/etc/passwd").exists()


def test_a_tree_holding_a_link_out_is_removed_without_following_it(root: Path, outside: Path, resolution: str) -> None:
    assert remove_beneath(root, "dir") is True
    assert not (root / "dir").exists()
    assert (outside / "canary").read_bytes() == b"must survive"


def test_removal_through_a_symlinked_directory_is_refused(root: Path, outside: Path, resolution: str) -> None:
    with pytest.raises(UnsafePath, match="'dir/linkdir' is a symbolic link"):
        remove_beneath(root, "dir/linkdir/canary", [root])
    assert (outside / "canary").read_bytes() == b"must survive"


def test_a_root_that_is_itself_a_link_to_elsewhere_must_be_configured_as_such(root: Path, outside: Path) -> None:
    alias = root.parent / "alias"
    alias.symlink_to(outside)
    with pytest.raises(UnsafeRoot, match="not one of the configured roots"):
        remove_beneath(alias, "canary", [root])
    assert (outside / "canary").exists()


def test_the_root_itself_is_never_removed(root: Path, resolution: str) -> None:
    for relative in ("", ".", "/", "./"):
        with pytest.raises(UnsafePath):
            remove_beneath(root, relative, [root])
    with pytest.raises(UnsafePath, match=r"'\.\.'"):
        remove_beneath(root / "dir", "..", [root / "dir"])
    assert (root / "file").exists()


def test_an_empty_root_would_have_removed_the_working_directorys_canary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    (work / "data").mkdir(parents=True)
    (work / "canary").write_bytes(b"must survive")
    (work / "data" / "canary").write_bytes(b"must survive")
    monkeypatch.chdir(work)  # without the check, "" and "." would mean this directory, "data" a directory in it
    for bad in ("", ".", "data", "./data"):
        with pytest.raises(UnsafeRoot):
            remove_beneath(bad, "canary")
    assert (work / "canary").exists() and (work / "data" / "canary").exists()


def test_root_slash_would_have_removed_a_canary_by_its_absolute_path(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_bytes(b"must survive")
    with pytest.raises(UnsafeRoot, match="'/'"):
        remove_beneath("/", str(canary).lstrip("/"))
    with pytest.raises(UnsafeRoot, match="not one of the configured roots"):
        remove_beneath(tmp_path, "canary", [tmp_path / "elsewhere"])
    assert canary.exists()


def test_a_missing_root_is_refused_not_taken_as_empty(tmp_path: Path) -> None:
    with pytest.raises(UnsafeRoot, match="does not exist"):
        remove_beneath(tmp_path / "unmounted", "x", [tmp_path / "unmounted"])


def test_a_tree_removed_while_unreadable_entries_inside_are_handled_by_rmtree(root: Path, resolution: str) -> None:
    deep = root / "deep"
    path = deep
    for level in range(50):
        path = path / f"level{level}"
    path.mkdir(parents=True)
    (path / "leaf").write_bytes(b"x")
    os.chmod(path / "leaf", stat.S_IRUSR)
    assert remove_beneath(root, "deep") is True
    assert not deep.exists()


def test_a_kernel_without_openat2_falls_back_to_the_walk(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def no_openat2(*args: object) -> int:
        calls.append(1)
        ctypes.set_errno(errno.ENOSYS)  # what Linux < 5.6, or a seccomp filter that hides it, answers
        return -1

    monkeypatch.setattr(safe_paths, "_use_openat2", True)
    monkeypatch.setattr(safe_paths, "_openat2", lambda: no_openat2)
    assert _read(open_beneath(root, "dir/sub/nested")) == b"nested"
    with pytest.raises(UnsafePath, match="symbolic link"):
        open_beneath(root, "dir/linkdir/secret")
    assert calls == [1] and safe_paths._use_openat2 is False, "asked once, then the walk only"
