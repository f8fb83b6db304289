"""Who connects to PostgreSQL and RabbitMQ as whom: one database role and one broker user per service.

Each principal (a service, the accounts tool, the site's instruments, its readers) has its own PostgreSQL role
(named like its schema, e.g. `karoo_ingest`) and its own RabbitMQ user (`karoo-ingest`), with passwords kept in
files under the credentials directory (`obsflow setup` writes them, mode 0600). A URL in the settings that names
a user itself (`amqp://guest:guest@...`) is an explicit choice to share that account and is used as given.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from yarl import URL

from shared.errors import ConfigurationError
from shared.settings import SERVICES, Settings

# Principals besides the services: the accounts tool (`obsflow accounts`), the instruments that announce
# observations (`obsflow simulate correlator`, a correlator), and readers of the event log (`obsflow events tail`).
PRINCIPALS = (*SERVICES, "accounts", "instrument", "reader")
System = Literal["postgres", "amqp"]
_PASSWORD_BYTES = 32
MIN_PASSWORD = 16


def broker_user(settings: Settings, principal: str) -> str:
    """The RabbitMQ user of `principal` at this site, e.g. `karoo-ingest`."""
    return f"{settings.site}-{principal}"


def database_role(settings: Settings, principal: str) -> str:
    """The PostgreSQL role of `principal`: the name of the schema it owns, e.g. `karoo_ingest`."""
    return settings.schema_for(principal)


def password_file(settings: Settings, principal: str, system: System) -> Path:
    """Where `principal`'s password for `system` is kept."""
    return credentials_dir(settings) / f"{principal}.{system}-password"


def credentials_dir(settings: Settings) -> Path:
    """The directory of the site's password files (`credentials_dir`, else `<data_dir>/credentials`)."""
    return Path(settings.credentials_dir or Path(settings.data_dir) / "credentials").absolute()


def names_a_user(url: str) -> bool:
    """True when the URL carries its own user (an explicit, shared account)."""
    return bool(URL(url).user)


def own_credentials(settings: Settings) -> bool:
    """True when services connect with their own role and user (the URLs name none)."""
    return not names_a_user(settings.amqp_url) and not names_a_user(settings.database_url)


def database_url(settings: Settings, principal: str) -> str:
    """The PostgreSQL URL `principal` connects with."""
    if names_a_user(settings.database_url):
        return settings.database_url
    password = read_password(settings, principal, "postgres")
    return str(URL(settings.database_url).with_user(database_role(settings, principal)).with_password(password))


def amqp_url(settings: Settings, principal: str) -> str:
    """The RabbitMQ URL `principal` connects with."""
    if names_a_user(settings.amqp_url):
        return settings.amqp_url
    password = read_password(settings, principal, "amqp")
    return str(URL(settings.amqp_url).with_user(broker_user(settings, principal)).with_password(password))


def read_password(settings: Settings, principal: str, system: System) -> str:
    """`principal`'s password for `system`, read from its file; ConfigurationError saying how to create it."""
    path = password_file(settings, principal, system)
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigurationError(
            f"no {system} credentials for {principal!r} at {path}: run `obsflow setup` (it creates a role and a "
            f"user per service), or name an account in OBSFLOW_{'DATABASE' if system == 'postgres' else 'AMQP'}_URL"
        ) from None
    except OSError as e:
        raise ConfigurationError(f"cannot read {path}: {e.strerror}; it must be readable by this service") from e
    if len(password) < MIN_PASSWORD or "REPLACE" in password.upper() or password.lower().startswith("change-me"):
        raise ConfigurationError(
            f"{path} holds a placeholder or a password shorter than {MIN_PASSWORD} characters; put a random one "
            "there (e.g. `openssl rand -base64 32`), or delete the file and run `obsflow setup` to generate it"
        )
    return password


def ensure_password(settings: Settings, principal: str, system: System) -> str:
    """The password in `principal`'s file for `system`, generating it (mode 0600) when there is none."""
    path = password_file(settings, principal, system)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # created meanwhile by another setup: use theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(_PASSWORD_BYTES))
    return read_password(settings, principal, system)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = URL(url)
    return str(parsed.with_password(None)) if parsed.password else url
