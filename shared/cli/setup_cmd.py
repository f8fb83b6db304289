"""`obsflow setup`: give every service its own database role and broker user, and declare the site's bus."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.cli.commands import help_of
from shared.errors import ConfigurationError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the setup command."""
    setup = sub.add_parser(
        "setup", help=help_of("setup"),
        description=help_of("setup").capitalize() + ". Idempotent. Passwords are generated once into the "
        "credentials directory (mode 0600). "
        "Needs a database administrator (--admin-database-url, default: user postgres on the configured server) "
        "and, unless --broker-definitions is given, rabbitmqctl on this host (run it as root on the broker's host).",
    )
    setup.add_argument("--admin-database-url-file", type=Path, metavar="FILE",
                       help="a file holding a PostgreSQL administrator's URL (default: user postgres on the "
                       "configured server, as local trust or peer authentication allows)")
    setup.add_argument("--broker-api", metavar="URL",
                       help="load the broker's users and topology through its management API at URL "
                       "(e.g. http://rabbitmq:15672) instead of rabbitmqctl on this host")
    setup.add_argument("--broker-api-credentials-file", type=Path, metavar="FILE",
                       help="a file holding the management API administrator's `user:password`")
    setup.add_argument("--broker-definitions", type=Path, metavar="FILE",
                       help="write the broker's users, permissions and topology to FILE for its operators to load, "
                       "instead of loading them here with rabbitmqctl")
    setup.set_defaults(func=_setup)


async def _setup(args: argparse.Namespace) -> int:
    from shared.credentials import credentials_dir, own_credentials, password_file
    from shared.provision.broker import BrokerApi
    from shared.provision.site import setup_site, shovels_file
    from shared.settings import load_settings

    settings = load_settings(args.config)
    if not own_credentials(settings):
        print("obsflow setup: OBSFLOW_DATABASE_URL or OBSFLOW_AMQP_URL names an account of its own, which every "
              "service then shares; remove the user from the URL to give each service its own")
    admin_url = _read_secret(args.admin_database_url_file) if args.admin_database_url_file else None
    broker_api = None
    if args.broker_api:
        if args.broker_api_credentials_file is None:
            raise ConfigurationError("--broker-api needs --broker-api-credentials-file (a file with user:password)")
        broker_api = BrokerApi.from_file(args.broker_api, args.broker_api_credentials_file)
    report = await setup_site(settings, admin_database_url=admin_url, definitions_file=args.broker_definitions,
                              broker_api=broker_api)
    print(f"database roles: {', '.join(report.roles)}")
    print(f"broker users: {', '.join(report.broker_users)}")
    if report.shovels:
        print(f"links to peers (shovels): {', '.join(report.shovels)}")
    for waiting in report.waiting_peers:
        print(f"the link to {waiting} waits (its events queue up here): put the password {waiting}'s operator gives "
              f"you for {settings.site}-peer in its amqp_password_file, {settings.peer(waiting).amqp_password_file}, "
              "and run `obsflow setup` again")
    if report.removed_shovels:
        print(f"removed the links to peers no longer declared: {', '.join(report.removed_shovels)}")
    if report.revoked_peer_users:
        print("revoked the rights here of the links of peers no longer declared: "
              f"{', '.join(report.revoked_peer_users)}")
    if report.definitions_file is not None:
        print(f"broker definitions written to {report.definitions_file}: load them on the broker "
              "(rabbitmqctl import_definitions FILE) before starting the services")
        if report.shovels:
            print(f"then load {shovels_file(report.definitions_file)} the same way (the peer links' shovels; it "
                  "holds the peers' passwords), and clear the shovels of peers no longer declared")
    print(f"passwords: {credentials_dir(settings)} (mode 0600; keep them there, never in the configuration)")
    for peer in settings.peers:
        print(f"{peer.name} logs in here as {peer.name}-peer: hand its operator the password in "
              f"{password_file(settings, peer.name + '-peer', 'amqp')}, for its amqp_password_file")
    return 0


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise ConfigurationError(f"cannot read {path}: {e.strerror}") from e
