"""Settings from the environment (prefix OBSFLOW_) and an optional TOML file (OBSFLOW_CONFIG_FILE)."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigurationError
from shared.service_names import SERVICES

_SITE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class StoreSettings(BaseModel):
    """One storage area a site manages."""

    name: str
    root: Path
    capacity_bytes: int = Field(default=0, ge=0)  # 0: bounded by the disk only
    state: Literal["online", "read-only", "sneaker", "disabled"] = "online"
    # Set only on the store a zero-configuration site gets: ingest creates its root when it is missing. A store
    # someone configured must exist already (a missing mount is an error, never an empty directory in its place).
    _zero_config: bool = PrivateAttr(default=False)

    @property
    def zero_config(self) -> bool:
        """Whether this is the default store of a site that configures none (its root may be created)."""
        return self._zero_config


class PeerSettings(BaseModel):
    """Another site this one exchanges events and bytes with (`[[peers]]`; docs/transfer.md).

    Secrets live in files: `token_file` holds the obsflow token this site uses at the peer (an account there with the
    read-append role), `amqp_password_file` the password of the broker user the peer gave this site. Neither is
    read at start-up of anything but the transfer service and `obsflow setup`, and neither is ever logged.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    amqp_url: str | None = None  # the peer's broker, without a password (`amqp://karoo-peer@host:5672/vhost`)
    amqp_password_file: Path | None = None
    bus_prefix: str = "obsflow"  # the peer's OBSFLOW_BUS__PREFIX: its events exchange is `<bus_prefix>.events`
    http_url: str | None = None  # the peer's base URL: ingest at its base port (`http://host:8470`)
    transfer_url: str | None = None  # its transfer service (forwarding); default: http_url's port + 2
    token_file: Path | None = None
    manager: Literal["http", "local", "globus"] = "http"
    landing_dir: Path | None = None  # local manager: a directory here that the peer's ingest reads (a source root)
    cost: float = Field(default=1.0, gt=0)  # relative cost of sending a byte over this link
    thin: bool = False  # a thin link: files cross it once, then travel on from the first copy beyond it
    bandwidth_mbps: float | None = Field(default=None, gt=0)  # a cap on what this site sends there
    via: str | None = None  # send files for this peer through that peer instead of directly

    @field_validator("name", "via")
    @classmethod
    def _site_name(cls, value: str | None) -> str | None:
        if value is not None and not _SITE_NAME.match(value):
            raise ValueError("a peer's name is its site name: 1-40 lowercase letters, digits, '-' or '_'")
        return value


class BusSettings(BaseModel):
    """Names and retention of the site's RabbitMQ topology."""

    prefix: str = "obsflow"
    stream_max_age: str = "30D"
    stream_max_bytes: int = 50 * 1024**3
    stream_segment_bytes: int = 100 * 1024**2
    delivery_limit: int = 5
    prefetch: int = 500
    max_event_bytes: int = Field(default=1024**2, ge=1024)  # larger messages are dead-lettered, never parsed
    handled_retention_s: float = 35 * 86400.0  # ids of handled events kept for dedup: longer than the stream
    # Refuse events whose broker-checked user id is not a producer of their type at their site. None: on when the
    # services connect with users of their own (a shared account cannot tell its publishers apart).
    verify_publishers: bool | None = None


# The values of the config file being loaded (set by load_settings for the duration of one build).
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("obsflow_config_file_values", default=None)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The TOML file's values, below the environment in priority."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ returns the whole table at once

    def __call__(self) -> dict[str, Any]:
        return _FILE_VALUES.get() or {}


SYSTEM_DATA_DIR = Path("/var/lib/obsflow")


def default_data_dir() -> Path:
    """Where a site keeps its generated secret and default store: $XDG_DATA_HOME/obsflow, else
    ~/.local/share/obsflow, else (root, or no home) /var/lib/obsflow."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "obsflow"
    home = os.path.expanduser("~")
    # Root runs a system service: its data belongs in /var/lib, where the unprivileged account its jobs run as can
    # be let in (root's home is private, mode 0700). A home-less uid (a container's arbitrary one) goes there too.
    if os.geteuid() == 0 or not os.path.isabs(home) or home == "/":
        return SYSTEM_DATA_DIR
    return Path(home) / ".local" / "share" / "obsflow"


class Settings(BaseSettings):
    """Everything a site's services need; one instance per process, built at start-up."""

    model_config = SettingsConfigDict(env_prefix="OBSFLOW_", env_nested_delimiter="__", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))

    site: str = "local"
    # Server addresses. Without a user in them, each service connects with its own role and broker user, whose
    # passwords `obsflow setup` keeps in `credentials_dir`; a URL naming a user is an explicit shared account.
    database_url: str = "postgresql://127.0.0.1:5432/postgres"
    # PostgreSQL connections (docs/architecture.md, "Connections", has the arithmetic): each service process's pool,
    # how many such processes share the server, and what is left for everything else (CLI, staging locks, tests).
    db_pool_size: int = Field(default=8, ge=2, le=200)
    db_processes: int = Field(default=len(SERVICES), ge=1)  # 5 for `obsflow up`; replicas x 5 on Kubernetes
    db_reserved_connections: int = Field(default=55, ge=0)
    schema_prefix: str | None = None
    amqp_url: str = "amqp://127.0.0.1:5672/"
    credentials_dir: Path | None = None  # default: <data_dir>/credentials
    bus: BusSettings = BusSettings()
    http_host: str = "127.0.0.1"
    http_base_port: int = 8470
    http_max_body_bytes: int = Field(default=1024**2, ge=1024)  # a JSON request body (uploads stream their bytes)
    http_read_timeout_s: float = Field(default=30.0, gt=0)  # the longest pause between two reads of any request body
    http_body_timeout_s: float = Field(default=60.0, gt=0)  # a whole JSON request body
    http_idle_timeout_s: float = Field(default=75.0, gt=0)  # an idle keep-alive connection is closed after this
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    shutdown_grace_s: float = 20.0
    data_dir: Path = Field(default_factory=default_data_dir)
    auth_secret: SecretStr | None = None
    auth_secret_file: Path | None = None
    token_ttl_s: float = 30 * 86400
    login_failures_per_account: int = Field(default=10, ge=1)  # per login_failure_window_s
    login_failures_per_address: int = Field(default=30, ge=1)
    login_failure_window_s: float = Field(default=300.0, gt=0)
    stores: list[StoreSettings] = []
    peers: list[PeerSettings] = []
    services: dict[str, dict[str, Any]] = {}

    @field_validator("site")
    @classmethod
    def _site_is_a_routing_word(cls, value: str) -> str:
        if not _SITE_NAME.match(value):
            raise ValueError("a site name is 1-40 lowercase letters, digits, '-' or '_', starting with a letter")
        return value

    @field_validator("data_dir", "auth_secret_file", "credentials_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # A relative directory would mean another one for every working directory: two services or the CLI
        # started from different places would generate and use different auth secrets.
        if value is not None and not value.expanduser().is_absolute():
            raise ValueError(f"must be an absolute path (got {str(value)!r}), the same from every working directory")
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _stores_are_absolute(self) -> Settings:
        # Zero configuration gives one store under the data directory; relative roots resolve from the cwd, once,
        # here: nothing later (a cleanup above all) may take a root relative to whatever its cwd is then.
        self.data_dir = Path(self.data_dir).resolve()
        for store in self.stores:
            if str(store.root) in ("", ".", "/"):
                raise ValueError(f"store {store.name!r} has root {str(store.root)!r}: give it its own directory")
        if not self.stores:
            default = StoreSettings(name="main", root=Path(self.data_dir) / "stores" / "main")
            default._zero_config = True
            self.stores = [default]
        for store in self.stores:
            store.root = store.root.resolve()
        names = [peer.name for peer in self.peers]
        for peer in self.peers:
            if peer.name == self.site or names.count(peer.name) > 1:
                raise ValueError(
                    f"peer {peer.name!r} is this site or declared twice: each [[peers]] names another site")
            if peer.via is not None and (peer.via == peer.name or peer.via not in names):
                raise ValueError(f"peer {peer.name!r} goes via {peer.via!r}, which is not another declared peer")
        return self

    def peer(self, name: str) -> PeerSettings:
        """The declared peer `name`; ConfigurationError if there is none."""
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise ConfigurationError(f"site {name!r} is not a declared peer of {self.site!r}; add it to [[peers]]")

    def schema_for(self, service: str) -> str:
        """The PostgreSQL schema that `service` owns at this site."""
        return f"{self.schema_prefix or self.site}_{service}".replace("-", "_")

    def http_port(self, service: str) -> int:
        """The port `service` serves HTTP on: base port + its place in SERVICES."""
        return self.http_base_port + SERVICES.index(service)

    def service_options(self, service: str) -> dict[str, Any]:
        """The free-form `[services.<name>]` table of the config file."""
        return dict(self.services.get(service, {}))


# The paths a config file may give relative to itself: (the table, the key). They resolve against the file's own
# directory, so a site config and the scripts and directories it names move together (examples/obsflow.toml).
# Paths from the environment are not: a relative data directory is refused, relative store roots use the cwd.
FILE_RELATIVE_PATHS: tuple[tuple[tuple[str, ...], str], ...] = (
    ((), "data_dir"),
    ((), "auth_secret_file"),
    ((), "credentials_dir"),
    (("services", "ingest"), "source_roots"),
    (("services", "scheduler"), "script_roots"),
    (("services", "scheduler"), "input_roots"),
    (("services", "scheduler", "backend_options", "slurm"), "slurm_conf"),
)
# The same for every `[[peers]]` table.
PEER_FILE_PATHS = ("token_file", "amqp_password_file", "landing_dir")


def anchor_file_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """The config file's `values` with each relative path of FILE_RELATIVE_PATHS and `[[stores]] root` joined to
    `base` (the file's directory); absolute and `~` paths, and values of the wrong shape, are left as they are."""
    values = copy.deepcopy(values)
    for tables, key in FILE_RELATIVE_PATHS:
        table: Any = values
        for name in tables:
            table = table.get(name) if isinstance(table, dict) else None
        if isinstance(table, dict) and key in table:
            table[key] = _anchored(table[key], base, several=key.endswith("_roots"))
    stores = values.get("stores")
    if isinstance(stores, list):
        for store in stores:
            # A root of "." stays as written, to be refused: a store is never the config file's own directory.
            root = store.get("root") if isinstance(store, dict) else None
            if isinstance(root, str) and root and os.path.normpath(root) != ".":
                store["root"] = _anchored(root, base, several=False)
    peers = values.get("peers")
    for peer in peers if isinstance(peers, list) else ():
        for key in PEER_FILE_PATHS if isinstance(peer, dict) else ():
            if key in peer:
                peer[key] = _anchored(peer[key], base, several=False)
    return values


def _anchored(value: Any, base: Path, *, several: bool) -> Any:
    if isinstance(value, list):
        return [_anchored(v, base, several=False) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if several and os.pathsep in value:  # roots given as one string, separated by ':' as in the environment
        return os.pathsep.join(_anchored(v, base, several=False) for v in value.split(os.pathsep))
    if value.startswith("~") or os.path.isabs(value):
        return value
    return os.path.normpath(base / value)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings: explicit overrides, then OBSFLOW_* environment variables, then the TOML file (deep-merged).

    Relative paths in the file resolve against the file's directory (see FILE_RELATIVE_PATHS)."""
    path = config_file or os.environ.get("OBSFLOW_CONFIG_FILE")
    file_values: dict[str, Any] = {}
    if path:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigurationError(f"cannot read config file {path}: {e}") from e
        file_values = anchor_file_paths(file_values, Path(path).absolute().parent)
    token = _FILE_VALUES.set(file_values)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigurationError(f"invalid obsflow settings ({problems}); check OBSFLOW_* and {path}") from e
    finally:
        _FILE_VALUES.reset(token)
