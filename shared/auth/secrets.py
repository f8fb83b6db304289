"""The site's token-signing secret: from the environment, from a file, or generated once into the data directory.

A service refuses to start with a secret that anyone could guess: empty, shorter than 32 bytes, one of the
placeholders shipped in deploy/, or with hardly any distinct characters. The secret's value never appears in a
log line, an error message or a repr; where it came from does (so a token refused here can say which secret
this service checks it against).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ConfigurationError
from shared.settings import Settings

MIN_SECRET_BYTES = 32
MIN_DISTINCT_CHARACTERS = 8
# Values shipped in deploy/ for operators to replace (tests/auth/test_secrets.py checks this list against deploy/).
PLACEHOLDERS = frozenset({"change-me-to-a-long-random-string"})
_HOW_TO_MAKE_ONE = "make one with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"


@dataclass(frozen=True)
class SiteSecret:
    """The secret that signs and checks this site's tokens, and where it came from (never its value in a repr)."""

    value: str = field(repr=False)
    source: str

    @property
    def key_id(self) -> str:
        """A short public fingerprint: tokens carry it, so one signed with another secret is recognised as such."""
        return key_id(self.value)


def key_id(secret: str) -> str:
    """The fingerprint of `secret` (a hash of it: it reveals nothing a token does not already)."""
    return hashlib.sha256(b"obsflow-key-id\0" + secret.encode()).hexdigest()[:12]


def load_site_secret(settings: Settings) -> SiteSecret:
    """OBSFLOW_AUTH_SECRET, or OBSFLOW_AUTH_SECRET_FILE, or `<data_dir>/<site>-auth-secret` (generated, 0600)."""
    if settings.auth_secret is not None and settings.auth_secret_file is not None:
        raise ConfigurationError("both OBSFLOW_AUTH_SECRET and OBSFLOW_AUTH_SECRET_FILE are set; keep one of them")
    if settings.auth_secret is not None:
        secret = SiteSecret(settings.auth_secret.get_secret_value(), "OBSFLOW_AUTH_SECRET")
    elif settings.auth_secret_file is not None:
        secret = SiteSecret(_read(settings.auth_secret_file, "OBSFLOW_AUTH_SECRET_FILE"),
                            f"the file {settings.auth_secret_file}")
    else:
        path = generated_secret_path(settings)
        secret = SiteSecret(_generated(path), f"the file {path} (generated)")
    check_secret(secret)
    return secret


def site_secret(settings: Settings) -> str:
    """The value of the site's secret (see load_site_secret)."""
    return load_site_secret(settings).value


def generated_secret_path(settings: Settings) -> Path:
    """Where a site without a configured secret keeps its generated one."""
    return settings.data_dir / f"{settings.site}-auth-secret"


def check_secret(secret: SiteSecret) -> None:
    """ConfigurationError, naming the source but never the value, for a secret anyone could guess."""
    value = secret.value
    if value in PLACEHOLDERS or "change-me" in value.lower() or "changeme" in value.lower():
        raise ConfigurationError(f"the auth secret from {secret.source} is the placeholder shipped with obsflow; "
                                 f"replace it with a random one ({_HOW_TO_MAKE_ONE})")
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        raise ConfigurationError(f"the auth secret from {secret.source} is {size} bytes; at least {MIN_SECRET_BYTES} "
                                 f"are needed ({_HOW_TO_MAKE_ONE}), or set neither OBSFLOW_AUTH_SECRET nor "
                                 "OBSFLOW_AUTH_SECRET_FILE to have one generated in the data directory")
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        raise ConfigurationError(f"the auth secret from {secret.source} has fewer than {MIN_DISTINCT_CHARACTERS} "
                                 f"distinct characters; use a random one ({_HOW_TO_MAKE_ONE})")


def _read(path: Path, setting: str) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"cannot read the auth secret file {path} ({setting}): {e.__class__.__name__}; "
                                 "check the path and that this user may read it") from None


def _generated(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"cannot read the generated auth secret {path}: {e.__class__.__name__}") from None
    # Written whole to a private temporary file, then linked into place: a service starting at the same moment
    # finds either no secret or the complete one, and the first link wins.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(MIN_SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
        os.link(temporary, path)
    except FileExistsError:
        pass  # another service created it first
    except OSError as e:
        raise ConfigurationError(f"cannot create the auth secret at {path}: {e.__class__.__name__}: {e.strerror}; "
                                 "set OBSFLOW_DATA_DIR to a writable absolute directory, or OBSFLOW_AUTH_SECRET_FILE"
                                 ) from None
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip()
