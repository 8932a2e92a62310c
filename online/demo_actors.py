"""The demo's people: a narrator, the operator's and the officer's terminals, GnuPG.

- :class:`Narrator` prints each command as someone would type it (``operator $``,
  ``officer  $`` ...), its output, and the checks; it also keeps every command for
  ``commands.sh``.
- :class:`OperatorShell` runs ``wavesign`` commands in this process, through the very
  click command the console script runs (``cli.main``), with the operator's
  environment (URL, token, GnuPG home and key).
- :class:`OfficerShell` runs ``wavesign-offline`` as a subprocess: the demo's process
  never imports the appliance (``online`` never imports ``offline``), as across an air
  gap.
- :func:`gnupg_identities` makes the operator's and the officer's GnuPG keys in a short
  temporary home (gpg-agent's socket path is limited to ~100 characters) and kills the
  agents and removes the home afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text
from wavesign.shared.errors import WavesignError

__all__ = [
    "DemoError",
    "GpgIdentity",
    "Narrator",
    "OfficerShell",
    "OperatorShell",
    "find_tool",
    "gnupg_identities",
]

_WHO_WIDTH = 8


class DemoError(WavesignError):
    """A step of the demo failed: a command was refused or a check did not hold."""


class Narrator:
    """What the audience reads: steps, commands, their output, checks."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.script: list[str] = ["#!/bin/sh", "# The commands `wavesign demo` ran, in order."]

    def step(self, number: int, title: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]Step {number}: {title}")
        self.script += ["", f"# --- Step {number}: {title}"]

    def say(self, text: str) -> None:
        self.console.print(Text(text, style="italic"), soft_wrap=True)

    def command(self, who: str, line: str) -> None:
        prompt = Text(f"{who:<{_WHO_WIDTH}} $ ", style="bold cyan")
        prompt.append(line, style="bold")
        self.console.print(prompt, soft_wrap=True)
        self.script.append(line if who != "note" else f"# {line}")

    def comment(self, line: str) -> None:
        """A line for the script that is not a command (how a value was obtained)."""
        self.script.append(f"# {line}")

    def output(self, text: str) -> None:
        text = text.rstrip("\n")
        if not text:
            return
        indented = "\n".join("    " + line for line in text.splitlines())
        self.console.print(Text(indented, style="dim"), soft_wrap=True, highlight=False)

    def ok(self, text: str) -> None:
        self.console.print(Text("✔ " + text, style="green"), soft_wrap=True)


def find_tool(name: str) -> str:
    """The console script ``name`` of this installation (beside the running Python)."""
    beside = Path(sys.executable).with_name(name)
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DemoError(f"{name} is not installed (pip install 'wavesign[offline]')")
    return found


@contextlib.contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class OperatorShell:
    """``wavesign ARGS`` run in-process through the CLI's own click group."""

    def __init__(self, narrator: Narrator, env: Mapping[str, str | None]) -> None:
        self.narrator = narrator
        self.env = dict(env)

    def run(
        self,
        *args: str,
        display: str | None = None,
        env: Mapping[str, str | None] | None = None,
        show_output: bool = True,
        who: str = "operator",
    ) -> str:
        """Run the command; return its standard output. Raises :class:`DemoError`."""
        from .cli import cli  # here: the CLI module imports the demo command

        line = display or "wavesign " + shlex.join(args)
        self.narrator.command(who, line)
        out, err = io.StringIO(), io.StringIO()
        try:
            with (
                _environment({**self.env, **(env or {})}),
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
            ):
                code = cli.main(list(args), prog_name="wavesign", standalone_mode=False)
        except click.ClickException as exc:
            raise DemoError(f"`{line}`: {exc.format_message()}") from None
        except click.Abort:
            raise DemoError(f"`{line}`: aborted") from None
        except WavesignError as exc:
            raise DemoError(f"`{line}`: {exc}") from None
        if isinstance(code, int) and code != 0:
            raise DemoError(f"`{line}` exited {code}: {err.getvalue().strip()}")
        if show_output:
            self.narrator.output(err.getvalue() + out.getvalue())
        return out.getvalue()


class OfficerShell:
    """``wavesign-offline ARGS`` as a subprocess on the appliance's home."""

    def __init__(self, narrator: Narrator, env: Mapping[str, str]) -> None:
        self.narrator = narrator
        self.env = dict(env)
        self.exe = find_tool("wavesign-offline")

    def run(self, *args: str, display: str | None = None) -> str:
        line = display or "wavesign-offline " + shlex.join(args)
        self.narrator.command("officer", line)
        proc = subprocess.run(
            [self.exe, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
            raise DemoError(f"`{line}`: {lines[-1]}")
        self.narrator.output(proc.stderr + proc.stdout)
        return proc.stdout


@dataclass(frozen=True)
class GpgIdentity:
    """A GnuPG home with one signing key (no passphrase: demo keys are throwaway)."""

    home: Path
    fingerprint: str
    user_id: str


def _gpg(home: Path, *args: str) -> str:
    proc = subprocess.run(
        ["gpg", "--batch", *args],
        env=dict(os.environ, GNUPGHOME=str(home)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
        raise DemoError(f"gpg {args[0]}: {lines[-1]}")
    return proc.stdout


def make_identity(home: Path, user_id: str) -> GpgIdentity:
    home.mkdir(mode=0o700)
    _gpg(home, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", user_id,
         "ed25519", "sign", "1y")  # fmt: skip
    listing = _gpg(home, "--with-colons", "--list-secret-keys")
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    return GpgIdentity(home, fingerprint, user_id)


def export_public_key(identity: GpgIdentity) -> bytes:
    return _gpg(identity.home, "--armor", "--export", identity.fingerprint).encode()


def _short_temp_parent() -> str | None:
    """A temp folder short enough for gpg-agent's socket paths (else /tmp)."""
    parent = tempfile.gettempdir()
    return parent if len(parent) <= 60 else "/tmp"


@contextlib.contextmanager
def gnupg_identities(
    operator_uid: str, officer_uid: str
) -> Iterator[tuple[GpgIdentity, GpgIdentity]]:
    """Two GnuPG homes in a fresh short temp folder; agents killed and folder removed after."""
    if shutil.which("gpg") is None:
        raise DemoError("gpg is not installed (Debian: apt-get install gnupg)")
    base = Path(tempfile.mkdtemp(prefix="wsd-", dir=_short_temp_parent()))
    homes = [base / "operator", base / "officer"]
    try:
        yield make_identity(homes[0], operator_uid), make_identity(homes[1], officer_uid)
    finally:
        for home in homes:
            if home.exists():
                kill_agents(home)
        shutil.rmtree(base, ignore_errors=True)


def kill_agents(home: Path) -> None:
    """Stop the gpg-agent (and friends) of ``home`` and remove its socket folder, if any."""
    env = dict(os.environ, GNUPGHOME=str(home))
    for args in (["gpgconf", "--kill", "all"], ["gpgconf", "--remove-socketdir"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(args, env=env, capture_output=True, timeout=30, check=False)
