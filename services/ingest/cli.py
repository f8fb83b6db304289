"""`obsflow upload PATH` and `obsflow simulate correlator`: putting files into a site from the command line."""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shared.cli.commands import help_of
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from shared.api.ingest import IngestedFile
    from shared.cli.output import Output
    from shared.settings import Settings

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
HERA_SECONDS_PER_DAY = 86400.0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `upload` and `simulate correlator`."""
    upload = sub.add_parser(
        "upload", help=help_of("upload"),
        description="Upload a file (checksummed here, streamed, verified by the server, then minted; a progress bar "
        "on a terminal when it takes more than a second) or a directory (the server copies it: it must lie beneath "
        "one of the site's source roots). Inside a pipeline job the job's provenance goes with it.")
    upload.add_argument("path", type=Path)
    upload.add_argument("--name", help="the file's name at the site (default: the path's last component)")
    upload.add_argument("--type", dest="file_type", help="file type, e.g. uvh5 (default: the name's extension)")
    upload.add_argument("--md5", action="store_true", help="also compute and record an md5 checksum")
    upload.add_argument("--local", action="store_true",
                        help="the server reads PATH itself (shared filesystem; directories always do)")
    upload.add_argument("--json", action="store_true", help="print the minted file as one JSON document")
    upload.add_argument("--url", help="the ingest service's URL (default: from the settings)")
    upload.add_argument("--token", help="API token (default: $OBSFLOW_TOKEN or ~/.config/obsflow/token; "
                        "`obsflow accounts token NAME`)")
    upload.set_defaults(func=_upload)

    simulate = sub.add_parser("simulate", help=help_of("simulate"), description=help_of("simulate"))
    sim_sub = simulate.add_subparsers(dest="instrument", required=True, metavar="INSTRUMENT")
    correlator = sim_sub.add_parser("correlator", help="write HERA-like files and announce each one")
    correlator.add_argument("--dir", type=Path, help="where the correlator writes (default: the first of ingest's "
                            "source roots, `<data_dir>/incoming` unless [services.ingest] source_roots is set)")
    correlator.add_argument("--rate", required=True, type=float, help="files per second")
    correlator.add_argument("--size", required=True, type=parse_size, help="bytes per file (e.g. 64MiB)")
    correlator.add_argument("--count", type=int, help="stop after this many files (default: run until Ctrl-C)")
    correlator.add_argument("--type", dest="file_type", default="uvh5")
    correlator.set_defaults(func=_simulate)


def parse_size(text: str) -> int:
    """`1048576`, `64M`, `64MiB`, `1.5G` → bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 4096, 64MiB or 1G")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _type_of(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    suffix = path.suffix.lstrip(".")
    if not suffix:
        raise ConfigurationError(f"cannot tell the file type of {path.name}: pass --type (e.g. --type uvh5)")
    return suffix


async def _upload(args: argparse.Namespace) -> int:
    import asyncio

    from shared.cli.connect import client_for
    from shared.cli.output import Output
    from shared.client import LocalFileError, job_provenance

    path: Path = args.path
    file_type = _type_of(path, args.file_type)
    try:
        is_directory = stat.S_ISDIR((await asyncio.to_thread(path.stat)).st_mode)
    except OSError as e:  # said before anything else (a token, the service): the path is what is wrong
        raise LocalFileError(f"cannot upload {path}: {e.strerror}; check the path") from None
    produced_by = job_provenance()  # run, job and inputs when a pipeline step uploads its product
    metadata = {"produced_by": produced_by} if produced_by else None
    out = Output()
    async with client_for(args, ingest_url=args.url) as client:
        if args.local or is_directory:
            with out.waiting(f"the ingest service is copying {path}"):
                document = await client.upload_local(path, file_type=file_type, name=args.name, md5=args.md5,
                                                     metadata=metadata)
        else:
            with out.transfer(args.name or path.name) as progress:
                document = await client.upload(path, file_type=file_type, name=args.name, md5=args.md5,
                                               metadata=metadata, progress=progress)
    _print_file(out, document, as_json=args.json)
    return 0


def _print_file(out: Output, document: IngestedFile, *, as_json: bool) -> None:
    if as_json:
        out.json(document)
        return
    stores = ", ".join(i.store for i in document.instances) or "no local instance"
    out.line(f"{document.name}: {document.size} bytes, {document.checksum} ({stores})")


def correlator_name(start_jd: float) -> str:
    """A HERA correlator file name for an observation starting at `start_jd`."""
    return f"zen.{start_jd:.5f}.sum"


def write_observation(path: Path, size: int, seed: int) -> None:
    """Write `size` bytes that differ from every other observation's (blocking)."""
    block = bytearray(os.urandom(min(size, 4 * 1024 * 1024)) or b"")
    with path.open("wb") as f:
        written = 0
        while written < size:
            block[:16] = (seed * 1_000_003 + written).to_bytes(16, "little")[: min(16, len(block))]
            chunk = memoryview(block)[: min(len(block), size - written)]
            f.write(chunk)
            written += len(chunk)


def _correlator_directory(settings: Settings, wanted: Path | None) -> Path:
    """Where the simulated correlator writes: `wanted`, or the first directory ingest reads from."""
    from services.ingest.options import ingest_options
    from shared.safe_paths import split_beneath

    roots = ingest_options(settings.service_options("ingest"), data_dir=settings.data_dir,
                           store_roots=[store.root for store in settings.stores]).source_roots
    if wanted is None:
        if not roots:
            raise ConfigurationError("ingest reads local paths from no directory ([services.ingest] source_roots "
                                     "= []): pass --dir, and add it to source_roots so the files can be ingested")
        return Path(roots[0])
    directory = Path(os.path.abspath(wanted))
    if split_beneath(f"{directory}/x", roots) is None:
        print(f"obsflow: warning: {directory} is not beneath ingest's [services.ingest] source_roots "
              f"({', '.join(roots) or 'none'}); the ingest service will refuse these files", file=sys.stderr)
    return directory


async def _simulate(args: argparse.Namespace) -> int:
    import asyncio

    from yarl import URL

    from shared import credentials
    from shared.bus.publisher import ConfirmedPublisher
    from shared.bus.topology import Topology
    from shared.events import new_event
    from shared.events.types import ObservationAnnounced
    from shared.settings import load_settings

    settings = load_settings(args.config)
    directory = _correlator_directory(settings, args.dir)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    amqp_url = credentials.amqp_url(settings, "instrument")
    interval = 1.0 / args.rate
    start_jd = 2440587.5 + time.time() / HERA_SECONDS_PER_DAY  # the JD of now
    # As an instrument should (docs/instruments.md): a local buffer of unconfirmed announcements, publisher
    # confirms, reconnection, the same event ids sent again. A broker restart delays announcements, loses none.
    topology = Topology.from_settings(settings.bus)
    async with ConfirmedPublisher(amqp_url, topology, user_id=URL(amqp_url).user) as publisher:
        index, next_at = 0, time.monotonic()
        while args.count is None or index < args.count:
            jd = start_jd + index * 16.1 / HERA_SECONDS_PER_DAY
            path = directory / f"{correlator_name(jd)}.{args.file_type}"
            await asyncio.to_thread(write_observation, path, args.size, index)
            payload = ObservationAnnounced(path=str(path), file_type=args.file_type, expected_size=args.size)
            await publisher.publish(new_event(payload, site=settings.site, producer="correlator"))
            print(path, file=sys.stderr)
            index += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return 0
