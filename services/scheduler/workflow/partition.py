"""How an action cuts one night into chunks, and which neighbours a job waits for: hera_opm's rules."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from services.scheduler.workflow.model import ActionSpec, Count


@dataclass(frozen=True, slots=True)
class Chunk:
    """The files [start, stop) of a night that one job of an action works on, led by `primary`."""

    primary: int
    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class NightLayout:
    """An action's chunks over one night in time order; starts and stops never decrease along it."""

    chunks: list[Chunk]
    chunk_by_primary: dict[int, Chunk]
    starts: list[int]
    stops: list[int]

    @classmethod
    def of(cls, chunks: list[Chunk]) -> NightLayout:
        """The layout of these chunks (given in time order)."""
        return cls(
            chunks=chunks,
            chunk_by_primary={chunk.primary: chunk for chunk in chunks},
            starts=[chunk.start for chunk in chunks],
            stops=[chunk.stop for chunk in chunks],
        )

    def primaries_touching(self, start: int, stop: int) -> list[int]:
        """Primaries of the chunks sharing a file with [start, stop), in time order.

        hera_opm collects them file by file; as chunk starts and stops never decrease, that is the
        contiguous run of chunks found by two binary searches, in chunk order.
        """
        first = bisect_right(self.stops, start)
        last = bisect_left(self.starts, stop)
        return [chunk.primary for chunk in self.chunks[first:last]]


def resolve_count(value: Count | None, night_length: int) -> int:
    """A chunk or stride size as a number: "all" is the whole night, absent is 1."""
    if value is None:
        return 1
    if value == "all":
        return night_length
    return int(value)


def partition_night(action: ActionSpec, night_length: int) -> NightLayout:
    """Cut a night into the action's chunks exactly as hera_opm's _determine_stride_partitioning does."""
    size = resolve_count(action.chunk_size, night_length)
    stride = resolve_count(action.stride_length, night_length)
    chunks: list[Chunk] = []
    first = size // 2 if action.time_centered else 0
    for index in range(first, night_length, stride):
        start, stop = _bounds(index, size, action.time_centered)
        if stop > night_length:
            break  # too few files left for a full chunk: hera_opm drops them
        if action.collect_stragglers and stop + stride > night_length:
            if stride <= size:  # with gaps between chunks hera_opm only warns and collects nothing
                stop = night_length
            chunks.append(Chunk(index, start, stop))
            break
        chunks.append(Chunk(index, start, stop))
    return NightLayout.of(chunks)


def _bounds(index: int, size: int, time_centered: bool) -> tuple[int, int]:
    if time_centered:
        return max(index - size // 2, 0), index + (size + 1) // 2
    return index, index + size


def prereq_reach(action: ActionSpec, night_length: int) -> int:
    """How many files wide the neighbourhood is that a job of `action` takes its prereqs from.

    hera_opm joins two windows around the job's primary file: one of prereq_chunk_size and one of the
    action's own chunk_size ("all" turned into the night length). Both are centred alike and grow
    with their width, so their union is the wider of the two.
    """
    own = resolve_count(action.chunk_size, night_length)
    if action.prereq_chunk_size == "all":
        return max(own, night_length)
    return max(own, resolve_count(action.prereq_chunk_size, night_length))


def neighbour_window(action: ActionSpec, index: int, night_length: int, width: int) -> tuple[int, int]:
    """The files [start, stop) around `index` that hera_opm's make_chunk_list picks for a prereq."""
    if action.prereq_chunk_size == "all":
        return 0, night_length
    start, stop = _bounds(index, width, action.time_centered)
    stop = min(stop, night_length)
    stride = resolve_count(action.stride_length, night_length)
    if action.collect_stragglers and stop + stride > night_length and stride <= width:
        stop = night_length
    return start, stop


def prereq_primaries(action: ActionSpec, index: int, night_length: int, width: int, prereq: NightLayout) -> list[int]:
    """Primary indices of the prereq's jobs that the job of `action` led by `index` waits for, in order."""
    start, stop = neighbour_window(action, index, night_length, width)
    return prereq.primaries_touching(start, stop)
