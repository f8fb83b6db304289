"""File names, sizes and paths: every bad one refused with a message saying what is wrong and allowed."""

from pathlib import Path

import pytest

from services.ingest.names import (
    FileTooLarge,
    InvalidFileName,
    InvalidFileSize,
    PathOutsideStore,
    safe_join,
    validate_file_name,
    validate_size,
)


@pytest.mark.parametrize(
    "name",
    [
        "zen.2459122.30000.sum.uvh5",
        "zen.2459122.30000.sum.ant_metrics.hdf5",
        "a",
        "0",
        "book-1_2+3.tar",
        "x" * 255,
    ],
)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_file_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "the file name is empty"),
        ("x" * 256, "256 characters long, the maximum is 255"),
        ("..", "contains '..'"),
        ("a..b", "contains '..'"),
        ("/abs", "absolute path"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share", "absolute path"),
        ("C:\\data", "absolute path"),
        ("sub/file", "sub-paths are not allowed"),
        ("../escape", "sub-paths are not allowed"),
        ("sub\\file", "sub-paths are not allowed"),
        ("new\nline", "control or invisible character '\\n' (U+000A) at position 3"),
        ("nul\0", "U+0000"),
        ("tab\there", "U+0009"),
        ("del\x7f", "U+007F"),
        ("zero\u200bwidth", "U+200B ZERO WIDTH SPACE"),
        ("rtl\u202eevil", "U+202E"),
        (".hidden", "starts with '.'"),
        ("-rf", "starts with '-'"),
        ("_x", "starts with '_'"),
        ("has space", "' ' (U+0020 SPACE) at position 3 is not allowed"),
        ("zen.2459122.30000.sum.uvh5\u0435", "U+0435 CYRILLIC SMALL LETTER IE"),
        ("\u0430bc", "U+0430 CYRILLIC SMALL LETTER A"),
        ("caf\u00e9", "U+00E9 LATIN SMALL LETTER E WITH ACUTE"),
        ("full\uff0ewidth", "U+FF0E FULLWIDTH FULL STOP"),
        ("\uff41", "FULLWIDTH LATIN SMALL LETTER A"),
        ("digit\u0663", "ARABIC-INDIC DIGIT THREE"),
        ("star*", "'*'"),
        ("colon:", "':'"),
    ],
)
def test_invalid_names_are_refused_with_reason_and_rules(name: str, reason: str) -> None:
    with pytest.raises(InvalidFileName) as refused:
        validate_file_name(name)
    message = str(refused.value)
    assert reason in message
    if name and len(name) <= 255:
        assert "may contain only letters A-Z a-z, digits 0-9 and '.', '_', '+', '-'" in message


def test_max_length_is_configurable() -> None:
    assert validate_file_name("abcde", max_length=5) == "abcde"
    with pytest.raises(InvalidFileName, match="maximum is 4"):
        validate_file_name("abcde", max_length=4)


def test_non_string_name_is_refused() -> None:
    with pytest.raises(InvalidFileName, match="must be a string"):
        validate_file_name(b"bytes")  # type: ignore[arg-type]


def test_sizes() -> None:
    assert validate_size(0, 10) == 0
    assert validate_size(10, 10) == 10
    with pytest.raises(FileTooLarge, match="11 bytes, larger than this site's maximum of 10"):
        validate_size(11, 10)
    with pytest.raises(InvalidFileSize, match="negative"):
        validate_size(-1, 10)
    for bad in (True, 1.5, "3", None):
        with pytest.raises(InvalidFileSize, match="integer"):
            validate_size(bad, 10)  # type: ignore[arg-type]


def test_safe_join_stays_inside_root(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a") == tmp_path.resolve() / "a"
    assert safe_join(tmp_path, "night/zen.1") == tmp_path.resolve() / "night" / "zen.1"
    assert safe_join(tmp_path, "night/../zen.1") == tmp_path.resolve() / "zen.1"


@pytest.mark.parametrize("relative", ["..", "../x", "a/../../x", "/etc/passwd", "", ".", "a/..", "x\0y"])
def test_safe_join_refuses_traversal(tmp_path: Path, relative: str) -> None:
    with pytest.raises(PathOutsideStore):
        safe_join(tmp_path / "store", relative)


def test_safe_join_refuses_a_symlink_leading_out(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "exit").symlink_to(tmp_path)
    with pytest.raises(PathOutsideStore, match="not inside the store root"):
        safe_join(store, "exit/secret")
