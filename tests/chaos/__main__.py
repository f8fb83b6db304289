"""`make chaos`: SIGKILL services, restart RabbitMQ and PostgreSQL and publish garbage during an ingest of thousands of
files, then check the invariants; progress on stderr, one JSON object as the last line of stdout (docs/chaos.md).

    .venv/bin/python -m tests.chaos --duration 300 --files 3000 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys

import structlog

from tests.chaos.site import ChaosSite
from tests.chaos.soak import SoakPlan, run_soak


async def _main(plan: SoakPlan, keep: bool) -> int:
    site = ChaosSite()
    report: dict[str, object] = {"ok": False, "seed": plan.seed, "site": site.name}
    try:
        report = await run_soak(plan, site)
    except Exception as e:  # the soak itself could not go on: said in the report, never a bare traceback
        report["error"] = f"{e.__class__.__name__}: {e}"
        report["service_logs"] = str(site.directory)
        keep = True
    finally:
        await site.stop()
        if not report.get("ok"):
            keep = True
            report["service_logs"] = str(site.directory)
        await asyncio.to_thread(site.close, keep)
    print(json.dumps(report))
    return 0 if report.get("ok") else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of faults (default 300)")
    parser.add_argument("--files", type=int, default=3000, help="files put in: 80%% announced, 20%% uploaded")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random choice (default: a new one)")
    parser.add_argument("--settle-timeout", type=float, default=300.0,
                        help="seconds the site may take to become quiet after the faults (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the site's directory (logs) even when it passes")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    plan = SoakPlan(duration_s=args.duration, files=args.files, seed=seed, settle_timeout_s=args.settle_timeout)
    print(f"chaos: seed {seed}, {args.duration:.0f} s of faults, {args.files} files", file=sys.stderr)
    sys.exit(asyncio.run(_main(plan, args.keep)))


if __name__ == "__main__":
    main()
