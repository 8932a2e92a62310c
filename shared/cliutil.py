"""What the three command-line tools share: exit codes and one-line errors.

Exit codes (design/cli.md): 0 success, 1 refused or failed (one ``error:`` line on
stderr, no traceback), 2 usage error (click's own).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from .errors import WavesignError


def fail(message: str) -> None:
    """Print ``error: message`` as one line on stderr and exit 1."""
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(1)


def run(group: click.Group, argv: list[str] | None = None) -> None:
    """Run a click group, turning every :class:`WavesignError` into ``error:`` + exit 1."""
    try:
        group.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        fail("aborted")
    except WavesignError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        fail("interrupted")


def main_for(group: click.Group) -> Callable[..., Any]:
    """A console-script entry point for ``group``."""

    def main(argv: list[str] | None = None) -> None:
        run(group, argv)

    return main
