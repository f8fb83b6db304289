"""Benchmark: one-pass copy + xxh3-128 + fsync against `cp` + `sync`, same bytes, same run.

Both sides end durable: `cp` is one call for the whole batch followed by `sync <files> <dir>`; ours fsyncs
each file as it copies it, fsyncs the directory once per batch, then runs the same `sync` command. The
small-file phase also reports a batched variant (copy all without fsync, then fsync all), which is what an
ingest of many small files can do before committing them together. Rounds alternate which side goes
first. Not a test: prints its figures, the last line one JSON object.

    .venv/bin/python -m tests.benchmarks.disk_copy --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from services.ingest.onepass import (
    copy_and_checksum,
    fsync_directory,
    fsync_file,
    read_checksums,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
BENCH_ROOT = Path("/tmp/obsflow-bench")
MAX_TOTAL_BYTES = 12 * GiB


def write_sources(directory: Path, count: int, size: int) -> list[Path]:
    """count files of size bytes of incompressible data, synced so no contender pays for them."""
    directory.mkdir()
    pattern = bytearray(os.urandom(min(size, 64 * MiB)))
    paths = []
    for index in range(count):
        path = directory / f"zen.{2459122 + index // 1000}.{index:05d}.sum.uvh5"
        with path.open("wb") as handle:
            remaining = size
            block = 0
            while remaining:
                pattern[:8] = (index * 1_000_003 + block).to_bytes(8, "little")  # no two blocks alike
                chunk = memoryview(pattern)[: min(remaining, len(pattern))]
                handle.write(chunk)
                remaining -= len(chunk)
                block += 1
        paths.append(path)
    subprocess.run(["sync"], check=True)
    return paths


def sync_command(destination: Path, names: list[str]) -> None:
    subprocess.run(["sync", *(str(destination / name) for name in names), str(destination)], check=True)


def run_cp(sources: list[Path], destination: Path) -> None:
    subprocess.run(["cp", *map(str, sources), str(destination)], check=True)
    sync_command(destination, [source.name for source in sources])


def run_onepass(sources: list[Path], destination: Path) -> None:
    for source in sources:
        copy_and_checksum(source, destination / source.name)
    fsync_directory(destination)
    sync_command(destination, [source.name for source in sources])


def run_onepass_batched(sources: list[Path], destination: Path) -> None:
    for source in sources:
        copy_and_checksum(source, destination / source.name, fsync=False)
    for source in sources:
        fsync_file(destination / source.name)
    fsync_directory(destination)
    sync_command(destination, [source.name for source in sources])


class OutputSpace:
    """Destination folders for each timed run. Deleting a run's output makes the next writer on this disk
    slow for a while, so outputs are kept until the space budget forces a clean-up (charged to nobody)."""

    def __init__(self, work: Path, batch_bytes: int, budget_bytes: int) -> None:
        self.work = work
        self.batch_bytes = batch_bytes
        self.budget_bytes = budget_bytes
        self.held: list[Path] = []

    def next_destination(self) -> Path:
        if (len(self.held) + 1) * self.batch_bytes > self.budget_bytes:
            for directory in self.held:
                shutil.rmtree(directory)
            self.held.clear()
            subprocess.run(["sync"], check=True)
        destination = self.work / f"out-{len(self.held)}-{time.monotonic_ns()}"
        destination.mkdir()
        self.held.append(destination)
        return destination


def measure(
    contenders: dict[str, Callable[[list[Path], Path], None]], sources: list[Path], space: OutputSpace, rounds: int
) -> dict[str, float]:
    """Median seconds per contender; the order rotates every round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            destination = space.next_destination()
            started = time.perf_counter()
            contenders[name](sources, destination)
            elapsed = time.perf_counter() - started
            times[name].append(elapsed)
            print(f"  round {round_index + 1} {name}: {elapsed:.3f} s", file=sys.stderr)
    return {name: statistics.median(values) for name, values in times.items()}


def check_copy_is_right(sources: list[Path], work: Path) -> None:
    destination = work / "check"
    destination.mkdir()
    copied = copy_and_checksum(sources[0], destination / "copy")
    if copied != read_checksums(sources[0]) or copied.size != sources[0].stat().st_size:
        raise SystemExit("one-pass copy produced a different checksum or size than a separate read")
    shutil.rmtree(destination)


def phase(label: str, count: int, size: int, rounds: int, work: Path, batched: bool) -> dict[str, float]:
    print(f"{label}: {count} x {size / MiB:.0f} MiB, {rounds} round(s)", file=sys.stderr)
    phase_dir = work / label
    phase_dir.mkdir()
    try:
        sources = write_sources(phase_dir / "src", count, size)
        check_copy_is_right(sources, phase_dir)
        contenders: dict[str, Callable[[list[Path], Path], None]] = {"cp": run_cp, "onepass": run_onepass}
        if batched:
            contenders["onepass_batched"] = run_onepass_batched
        space = OutputSpace(phase_dir, count * size, MAX_TOTAL_BYTES - count * size)
        return measure(contenders, sources, space, rounds)
    finally:
        shutil.rmtree(phase_dir)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 x 256 MiB and 300 x 1 MiB")
    parser.add_argument("--large-count", type=int)
    parser.add_argument("--large-mib", type=int)
    parser.add_argument("--small-count", type=int)
    parser.add_argument("--small-mib", type=int, default=1)
    parser.add_argument("--rounds", type=int, help="default 3 with --quick, else 1")
    arguments = parser.parse_args()
    quick = arguments.quick
    arguments.large_count = arguments.large_count or (2 if quick else 5)
    arguments.large_mib = arguments.large_mib or (256 if quick else 1024)
    arguments.small_count = arguments.small_count or (300 if quick else 2000)
    arguments.rounds = arguments.rounds or (3 if quick else 1)
    return arguments


def main() -> None:
    arguments = parse_arguments()
    large_bytes = arguments.large_count * arguments.large_mib * MiB
    small_bytes = arguments.small_count * arguments.small_mib * MiB
    # Phases run one after the other; each holds its sources and one copy at a time.
    peak = 2 * max(large_bytes, small_bytes)
    BENCH_ROOT.mkdir(exist_ok=True)
    free = shutil.disk_usage(BENCH_ROOT).free
    if peak > MAX_TOTAL_BYTES or peak > free // 2:
        raise SystemExit(f"needs {peak / GiB:.1f} GiB at once; limit 12 GiB and half of {free / GiB:.1f} GiB free")
    work = Path(tempfile.mkdtemp(dir=BENCH_ROOT))
    try:
        large = phase("large", arguments.large_count, arguments.large_mib * MiB, arguments.rounds, work, False)
        small = phase("small", arguments.small_count, arguments.small_mib * MiB, arguments.rounds, work, True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not any(BENCH_ROOT.iterdir()):
            BENCH_ROOT.rmdir()
    large_mb = large_bytes / 1e6
    figures = {
        "large_mb_s": round(large_mb / large["onepass"], 1),
        "large_cp_mb_s": round(large_mb / large["cp"], 1),
        "large_ratio": round(large["cp"] / large["onepass"], 3),
        "small_files_s": round(arguments.small_count / small["onepass"], 1),
        "small_cp_files_s": round(arguments.small_count / small["cp"], 1),
        "small_ratio": round(small["cp"] / small["onepass"], 3),
        "small_batched_files_s": round(arguments.small_count / small["onepass_batched"], 1),
        "small_batched_ratio": round(small["cp"] / small["onepass_batched"], 3),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
