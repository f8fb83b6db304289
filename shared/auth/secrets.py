"""The site's token-signing secret: from settings, or generated once into the data directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from shared.errors import ConfigurationError
from shared.settings import Settings


def site_secret(settings: Settings) -> str:
    """OBSFLOW_AUTH_SECRET when set; else `<data_dir>/auth-secret`, created (mode 0600) on first use."""
    if settings.auth_secret is not None:
        return settings.auth_secret.get_secret_value()
    path = Path(settings.data_dir) / f"{settings.site}-auth-secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    except FileExistsError:
        pass  # another service created it first
    except OSError as e:
        raise ConfigurationError(f"cannot create the auth secret at {path}: {e}; set OBSFLOW_AUTH_SECRET") from e
    return path.read_text().strip()
