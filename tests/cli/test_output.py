"""What the commands print: rich tables on a terminal, the same tables plain when piped, JSON with --json, and a
progress bar for transfers that take longer than a second, on a terminal only."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from shared.api.catalog import SessionSummary
from shared.cli.output import Output, cell
from tests.conftest import wait_for

ROWS = [("zen.2459122.30000.sum.uvh5", 1000, ["karoo", "nrao"], 2459122.3), ("x", 10, [], None)]
COLUMNS = ("name", "size", "instance_sites", "start_jd")


def _output(terminal: bool) -> tuple[Output, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Output(out, err, terminal=terminal), out, err


def test_piped_tables_are_plain_aligned_and_never_cut() -> None:
    output, out, _ = _output(terminal=False)
    long_name = "zen." + "9" * 300 + ".uvh5"
    output.table([*ROWS, (long_name, 1, [], None)], COLUMNS, numeric=("size",))
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "INSTANCE_SITES", "START_JD"]
    assert lines[1].split() == ["zen.2459122.30000.sum.uvh5", "1000", "karoo,nrao", "2459122.30000"]
    assert lines[2].split() == ["x", "10"] and lines[3].startswith(long_name)  # one line, however long
    assert all(line == line.rstrip() for line in lines) and "\x1b" not in out.getvalue()
    assert all(c not in out.getvalue() for c in "─│┃━")
    assert lines[2].rindex("10") == lines[1].index("1000") + 2  # numbers right-aligned


def test_terminal_tables_are_drawn_by_rich() -> None:
    output, out, _ = _output(terminal=True)
    output.table(ROWS, COLUMNS)
    assert "\x1b[" in out.getvalue() and "─" in out.getvalue()


def test_empty_tables_and_records() -> None:
    output, out, _ = _output(terminal=False)
    output.table([], COLUMNS, empty="(no runs yet)")
    output.record({"session_id": "2459122.30000", "closed_at": None, "n_files": 3})
    assert out.getvalue().splitlines() == ["(no runs yet)", "session_id  2459122.30000", "closed_at", "n_files     3"]


def test_json_documents_and_lines_of_models() -> None:
    output, out, _ = _output(terminal=True)  # JSON is the same on a terminal
    session = SessionSummary(session_id="s", start_jd=1.0, end_jd=2.0, n_observations=3,
                             last_seen_at=datetime(2020, 9, 30, tzinfo=UTC), status="open")
    output.json({"results": [session]})
    output.json_line(session)
    document, line = out.getvalue().split("\n}\n")
    assert json.loads(document + "}")["results"][0]["last_seen_at"] == "2020-09-30T00:00:00Z"
    assert json.loads(line)["session_id"] == "s" and "\x1b" not in out.getvalue()


def test_cells() -> None:
    assert [cell(v) for v in (None, ["a", "b"], True, 2459122.3, datetime(2020, 9, 30, 1, 2, 3, 456, tzinfo=UTC),
                              "text")] == ["", "a,b", "yes", "2459122.30000", "2020-09-30T01:02:03+00:00", "text"]


def test_a_quick_transfer_shows_no_progress_bar() -> None:
    output, _, err = _output(terminal=True)
    with output.transfer("zen.uvh5", after_s=60) as progress:
        progress("checksum", 10, 10)
        progress("send", 10, 10)
    assert err.getvalue() == ""


async def test_a_transfer_longer_than_the_delay_shows_a_progress_bar_on_a_terminal() -> None:
    output, _, err = _output(terminal=True)
    with output.transfer("zen.uvh5", after_s=0.05) as progress:
        progress("checksum", 50 * 1024**2, 100 * 1024**2)
        await wait_for(lambda: "checksumming zen.uvh5" in err.getvalue(), timeout_s=10)
        progress("send", 100 * 1024**2, 100 * 1024**2)
    assert "MB" in err.getvalue()


async def test_piped_output_shows_no_progress_bar() -> None:
    output, _, err = _output(terminal=False)
    with output.transfer("zen.uvh5", after_s=0) as progress:
        progress("send", 5, 10)
    assert err.getvalue() == ""


async def test_a_long_wait_shows_a_spinner_on_a_terminal_and_nothing_when_piped() -> None:
    output, _, err = _output(terminal=True)
    with output.waiting("the ingest service is copying /data/night", after_s=0.05):
        await wait_for(lambda: "copying /data/night" in err.getvalue(), timeout_s=10)
    with output.waiting("quick", after_s=60):
        pass
    assert "quick" not in err.getvalue()
    output, _, err = _output(terminal=False)
    with output.waiting("piped", after_s=0):
        pass
    assert err.getvalue() == ""
