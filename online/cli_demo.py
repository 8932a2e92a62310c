"""``wavesign demo``: the seed story played end to end on an embedded SQLite broker."""

from __future__ import annotations

import click

__all__ = ["demo"]

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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
