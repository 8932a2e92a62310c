"""What every ``wavesign`` command module shares: click settings and the API client."""

from __future__ import annotations

import click

from .client import ApiClient

__all__ = ["CONTEXT", "client_for"]

CONTEXT = {"help_option_names": ["-h", "--help"]}


def client_for(ctx: click.Context) -> ApiClient:
    """The root group's API client (``--url``/``--token`` or the environment), made once."""
    root = ctx.find_root()
    opts = root.obj if isinstance(root.obj, dict) else {}
    if "client" not in opts:
        opts["client"] = ApiClient(opts.get("url"), opts.get("token"))
        root.obj = opts
    client: ApiClient = opts["client"]
    return client
