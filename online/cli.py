"""``wavesign``: the operator's command line."""

from __future__ import annotations

import click
from wavesign.shared.cliutil import main_for

DEMO_PLAN = """\
The seed story that `wavesign demo` plays, step by step:

  1. root ceremony: the broker proposes its online keys, the appliance signs root v1
  2. wave init populate-targets 12 production  -> sign offline -> wave complete
  3. wave init v2.0-update 42 production       -> sign offline (QR frames)
     -> wave rollout v2.0-update canary -> status
     -> wave rollout v2.0-update us-east-1 -> wave complete
  4. a second wave, rolled out and canceled: the canary keeps its orphan target
  5. wavesign-audit verify over the evidence export
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wavesign")
def cli() -> None:
    """wavesign: production OTA waves with an online broker and an offline signer.

    The operator registers CI targets and devices, plans waves, exports signing
    requests to the air-gapped appliance (`wavesign-offline`) and imports its
    signatures. See `wavesign COMMAND --help`.
    """


@cli.command()
@click.option(
    "--out",
    "out_dir",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the demo's artifacts (QR frames, requests, evidence).",
)
def demo(out_dir: str) -> None:
    """Play the seed story end to end on an embedded SQLite broker.

    Until the broker lands this prints the plan of the story.
    """
    click.echo(DEMO_PLAN.rstrip())
    click.echo(f"\n(artifacts will be written to {out_dir}/)")


main = main_for(cli)
