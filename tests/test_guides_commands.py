"""Every command the guides and the README show exists, with every --flag shown.

The command lines are collected from the fenced code blocks of ``docs/guides/*.md``
and ``README.md``: each ``wavesign``, ``wavesign-offline``, ``wavesign-audit`` and
``wavesign-device`` invocation (also after a pipe or inside an explanatory
parenthesis). Each line's subcommand path is resolved in the click command tree, its
``--help`` must exit 0, and every ``--flag`` on the line must appear in that help.
``--help`` runs in-process with click's CliRunner (one run per distinct path); the four
console scripts themselves are run once each as subprocesses.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [*sorted((ROOT / "docs" / "guides").glob("*.md")), ROOT / "README.md"]
TOOLS = ("wavesign", "wavesign-offline", "wavesign-audit", "wavesign-device")

_FENCE = re.compile(r"^\s*(```+|~~~+)\s*\{?([\w-]*)\}?")
#: Code blocks that hold commands (a plain fence, a shell session or script, a CI job);
#: others (nginx, json, ...) may mention "wavesign" as a name.
_COMMAND_LANGUAGES = {"", "console", "sh", "shell", "bash", "yaml", "text"}
# A tool name at the start of a command: after the line start, a space, a pipe, "(",
# "$", a backquote or a path separator; followed by a space or the line end.
_COMMAND = re.compile(r"(?:^|(?<=[\s(|;&$`/]))(wavesign(?:-offline|-audit|-device)?)(?=\s|$)(.*)$")
_PLACEHOLDER = re.compile(r"<[^<>\n]*>")
# Where a command ends on its line: a comment, a pipe, a redirect, a closing
# parenthesis of "(officer: ...)", a shell separator.
_END = re.compile(r"\s#|\||>|\)|;|&&|\s&(?:\s|$)")


def _tools() -> dict[str, click.Command]:
    from wavesign.offline.cli import cli as offline_cli
    from wavesign.online.cli import cli as online_cli
    from wavesign.online.device_agent import cli as device_cli
    from wavesign.shared.audit_cli import cli as audit_cli

    return {
        "wavesign": online_cli,
        "wavesign-offline": offline_cli,
        "wavesign-audit": audit_cli,
        "wavesign-device": device_cli,
    }


@dataclass(frozen=True)
class Shown:
    """One command line as a document shows it."""

    where: str  # file:line
    tool: str
    args: tuple[str, ...]


def _code_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line inside fenced code blocks; continuations joined."""
    fence: str | None = None
    language = ""
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, language = match.group(1), match.group(2)
            continue
        if match and line.strip() == fence[0] * len(line.strip()):
            fence = None
            continue
        if language not in _COMMAND_LANGUAGES:
            continue
        if pending is not None:
            start, joined = pending
            line = joined + " " + line.strip()
            number = start
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1])
            continue
        yield number, line


def commands_in(lines: Iterable[tuple[str, str]]) -> list[Shown]:
    """The tool invocations on ``(where, line)`` pairs."""
    found = []
    for where, line in lines:
        line = _PLACEHOLDER.sub("PLACEHOLDER", line)
        for match in _COMMAND.finditer(line):
            tool, rest = match.group(1), match.group(2)
            end = _END.search(rest)
            if end is not None:
                rest = rest[: end.start()]
            try:
                args = shlex.split(rest)
            except ValueError:
                args = rest.split()
            found.append(Shown(where, tool, tuple(args)))
    return found


def shown_in_documents() -> list[Shown]:
    lines = []
    for document in DOCUMENTS:
        name = document.relative_to(ROOT)
        for number, line in _code_lines(document.read_text()):
            lines.append((f"{name}:{number}", line))
    return commands_in(lines)


def resolve(tool: str, args: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """The subcommand path of ``tool args``, and a problem if the path does not exist."""
    command = _tools()[tool]
    path: list[str] = []
    tokens = list(args)
    while isinstance(command, click.Group):
        if not tokens:
            return tuple(path), None  # a group alone (`wavesign --help` style)
        token = tokens.pop(0)
        if token.startswith("-"):
            option = _option(command, token.split("=", 1)[0])
            if option is not None and not option.is_flag and "=" not in token and tokens:
                tokens.pop(0)
            continue
        sub = command.commands.get(token)
        if sub is None:
            where = " ".join([tool, *path])
            return tuple(path), f"`{where}` has no command {token!r}"
        path.append(token)
        command = sub
    return tuple(path), None


def _option(command: click.Command, flag: str) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and flag in (*param.opts, *param.secondary_opts):
            return param
    return None


@cache
def help_text(tool: str, path: tuple[str, ...]) -> tuple[int, str]:
    """(exit code, output) of ``tool PATH --help``, in-process."""
    result = CliRunner().invoke(_tools()[tool], [*path, "--help"], prog_name=tool)
    return result.exit_code, result.output


def problems_of(shown: Iterable[Shown]) -> list[str]:
    """Every shown command whose path is missing, whose --help fails, or whose flag is
    not in its --help."""
    problems = []
    for item in shown:
        path, problem = resolve(item.tool, item.args)
        label = " ".join([item.tool, *path])
        if problem is not None:
            problems.append(f"{item.where}: {problem}")
            continue
        code, text = help_text(item.tool, path)
        if code != 0:
            problems.append(f"{item.where}: `{label} --help` exited {code}")
            continue
        for token in item.args:
            flag = token.split("=", 1)[0]
            if (
                flag.startswith("--")
                and len(flag) > 2
                and not re.search(re.escape(flag) + r"(?![\w-])", text)
            ):
                problems.append(f"{item.where}: `{label}` has no option {flag}")
    return problems


# --- the tests ------------------------------------------------------------------------------


def test_the_guides_show_commands_of_every_tool() -> None:
    shown = shown_in_documents()
    tools = {item.tool for item in shown}
    assert tools == set(TOOLS), f"tools shown: {sorted(tools)}"
    assert len(shown) > 80, len(shown)  # the guides are tutorials: many commands


def test_every_command_in_the_guides_exists_with_its_flags() -> None:
    problems = problems_of(shown_in_documents())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("tool", TOOLS)
def test_console_script_runs(tool: str) -> None:
    exe = Path(sys.executable).with_name(tool)
    result = subprocess.run(
        [str(exe), "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


# The checker itself, on lines whose verdict is known.


def test_checker_finds_a_missing_command_and_a_missing_flag() -> None:
    shown = commands_in(
        [
            ("a:1", "$ wavesign wave rolout v2.0-update canary"),
            ("a:2", "$ wavesign wave rollout v2.0-update canary --groups x"),
            ("a:3", "$ wavesign-offline sign req.json --confirm v2 --out resp.json"),
            ("a:4", "   (officer: wavesign-offline review r.json --json)"),
            ("a:5", "zbarcam --raw | wavesign requests import --qr-stdin"),
            ("a:6", "$ wavesign-audit verify ev/ --offline-journal j.jsonl --trusted-roots r"),
        ]
    )
    assert [item.where for item in shown] == ["a:1", "a:2", "a:3", "a:4", "a:5", "a:6"]
    assert problems_of(shown) == [
        "a:1: `wavesign wave` has no command 'rolout'",
        "a:2: `wavesign wave rollout` has no option --groups",
        "a:6: `wavesign-audit verify` has no option --trusted-roots",
    ]


def test_checker_reads_code_blocks_only_and_joins_continuations() -> None:
    text = "\n".join(
        [
            "Run `wavesign nonsense` in prose: not a code block.",
            "```console",
            "$ wavesign targets add n --version 42 \\",
            "      --sha256 <64 hex> --length 1 --tag main",
            "data folder: /srv/wavesign-data (WAVESIGN_DATA)",
            "```",
        ]
    )
    lines = [(f"t:{n}", line) for n, line in _code_lines(text)]
    shown = commands_in(lines)
    assert [(s.where, s.args[:2]) for s in shown] == [("t:3", ("targets", "add"))]
    assert "--length" in shown[0].args and "--tag" in shown[0].args


def test_checker_skips_code_blocks_of_other_languages() -> None:
    text = "```nginx\nupstream wavesign {\n}\n```\n```yaml\n  - wavesign targets list\n```\n"
    shown = commands_in((f"t:{n}", line) for n, line in _code_lines(text))
    assert [(s.where, s.args) for s in shown] == [("t:6", ("targets", "list"))]
