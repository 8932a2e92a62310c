"""``wavesign-offline``: the security officer's command line on the air-gapped machine."""

from __future__ import annotations

import click
from wavesign.shared.cliutil import main_for


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wavesign")
def cli() -> None:
    """wavesign-offline: the air-gapped signer for production targets.

    It holds the root and offline targets keys, shows the security officer exactly
    what a signing request changes, signs only after confirmation, and keeps a
    hash-chained journal. It never touches a network.
    """


main = main_for(cli)
