"""`obsflow up`, `obsflow service NAME`, `obsflow replay SERVICE`: running and rebuilding services."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING

from shared.cli.commands import help_of
from shared.service_names import SERVICES

if TYPE_CHECKING:
    import asyncio

HEALTHY_RUN_S = 300.0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the runtime commands."""
    up = sub.add_parser("up", help=help_of("up"), description=help_of("up"))
    up.add_argument("--only", nargs="+", choices=SERVICES, help="run only these services")
    up.set_defaults(func=_up)
    one = sub.add_parser("service", help=help_of("service"), description=help_of("service"))
    one.add_argument("name", choices=SERVICES)
    one.set_defaults(func=_service)
    replay = sub.add_parser("replay", help=help_of("replay"), description=help_of("replay") + " (with the "
                            "service stopped)")
    replay.add_argument("name", choices=SERVICES)
    replay.set_defaults(func=_replay)


async def _service(args: argparse.Namespace) -> int:
    from shared.logging import configure_logging
    from shared.runner import ServiceRunner, load_spec
    from shared.settings import load_settings

    settings = load_settings(args.config)
    configure_logging(args.name, settings.site, settings.log_format, settings.log_level)
    runner = ServiceRunner(load_spec(args.name), settings)
    await runner.run_until_signalled()
    return 1 if runner.failed else 0


async def _replay(args: argparse.Namespace) -> int:
    from shared.logging import configure_logging
    from shared.runner import ServiceRunner, load_spec
    from shared.settings import load_settings

    settings = load_settings(args.config)
    configure_logging("replay", settings.site, settings.log_format, settings.log_level)
    runner = ServiceRunner(load_spec(args.name), settings, http=False)
    try:
        await runner.prepare()
        consumers = runner.parts.stream_consumers
        if not consumers:
            print(f"{args.name} keeps no projection of the log; nothing to replay")
            return 0
        for consumer in consumers:
            applied = await consumer.rebuild(runner.parts.reset_projection)
            print(f"{args.name}: consumer {consumer.name} rebuilt from the start of the log ({applied} events applied)")
    finally:
        await runner.stop()
    return 0


async def _up(args: argparse.Namespace) -> int:
    import asyncio

    import structlog

    from shared.credentials import own_credentials
    from shared.logging import configure_logging
    from shared.provision.site import setup_site
    from shared.settings import load_settings

    log = structlog.get_logger()
    settings = load_settings(args.config)
    configure_logging("supervisor", settings.site, settings.log_format, settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    names = args.only or list(SERVICES)
    config = ["--config", args.config] if args.config else []
    if own_credentials(settings):
        # Every service connects as itself: make sure the roles, users and the bus exist (idempotent, quick).
        report = await setup_site(settings)
        log.info("site_ready", roles=len(report.roles), broker_users=len(report.broker_users))
    log.info("supervisor_starting", services=names, http_ports={n: settings.http_port(n) for n in names})
    await asyncio.gather(*(_supervise(name, config, stop, settings.shutdown_grace_s) for name in names))
    log.info("supervisor_stopped")
    return 0


async def _supervise(name: str, config: list[str], stop: asyncio.Event, grace_s: float) -> None:
    """Run `obsflow service NAME` in a child process; restart it with backoff whenever it dies."""
    import asyncio

    import structlog

    from shared.bus.backoff import Backoff

    log = structlog.get_logger()
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started_at = loop.time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli.main", *config, "service", name, env=os.environ.copy(),
        )
        stopping = asyncio.ensure_future(stop.wait())
        exited = asyncio.ensure_future(proc.wait())
        await asyncio.wait([stopping, exited], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(exited, grace_s + 5)
                except TimeoutError:
                    proc.kill()
                    await exited
            return
        stopping.cancel()
        if loop.time() - started_at > HEALTHY_RUN_S:
            backoff.reset()  # a crash after a long healthy run restarts at once, not after earlier crashes' delay
        log.warning("service_exited", name=name, returncode=proc.returncode, restart_in_s=backoff.peek())
        await backoff.wait(stop)
