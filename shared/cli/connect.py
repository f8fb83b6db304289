"""The client a command uses: the site from the settings (--config), the token from --token, OBSFLOW_TOKEN or
~/.config/obsflow/token."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.client import ObsflowClient


def client_for(args: argparse.Namespace, *, ingest_url: str | None = None) -> ObsflowClient:
    """The client of the site the command line's settings describe (MissingToken when there is no token)."""
    from shared.client import ObsflowClient, Site, api_token
    from shared.settings import load_settings

    site = Site.from_settings(load_settings(getattr(args, "config", None)))
    if ingest_url:
        site = dataclasses.replace(site, ingest=ingest_url.rstrip("/"))
    return ObsflowClient(site, api_token(getattr(args, "token", None)))
