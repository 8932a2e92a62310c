"""``wavesign-audit``: verifies an evidence export without network or broker."""

from __future__ import annotations

import click

from .cliutil import main_for


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wavesign")
def cli() -> None:
    """wavesign-audit: verify the whole signature chain of an evidence export.

    It needs no network and trusts nothing the broker says about itself: every
    check is recomputed from the exported files.
    """


main = main_for(cli)
