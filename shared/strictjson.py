"""Strict JSON input: one reader for every document that crosses a trust boundary.

Python's ``json`` module quietly keeps the last of two duplicate keys and accepts
floats, NaN and Infinity. Two parsers that disagree about which duplicate wins are a
classic signature bypass, and floats have no canonical form, so all of these are
refused here. A size limit is checked before any parsing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from .errors import WavesignError

__all__ = ["FieldReader", "JSONInputError", "loads_strict"]


class JSONInputError(WavesignError):
    """A document is not acceptable JSON, or a field in it is wrong."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JSONInputError(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _refuse_float(text: str) -> NoReturn:
    raise JSONInputError(f"floats are not allowed (found {text})")


def loads_strict(data: bytes | str, *, what: str, max_size: int) -> Any:
    """Parse ``data`` as JSON, refusing duplicates, floats, NaN and oversized input."""
    if len(data) > max_size:
        raise JSONInputError(f"{what} is {len(data)} bytes, above the limit of {max_size}")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        # strict=False: canonical JSON leaves control characters (a PEM key's newlines)
        # unescaped inside strings, and json.loads would otherwise refuse them.
        return json.loads(
            text,
            strict=False,
            object_pairs_hook=_no_duplicates,
            parse_float=_refuse_float,
            parse_constant=_refuse_float,
        )
    except JSONInputError as exc:
        raise JSONInputError(f"{what}: {exc}") from None
    except UnicodeDecodeError:
        raise JSONInputError(f"{what} is not UTF-8 text") from None
    except ValueError as exc:
        raise JSONInputError(f"{what} is not valid JSON ({exc})") from None


HEX64 = re.compile(r"[0-9a-f]{64}")


class FieldReader:
    """Reads typed fields out of one JSON object, naming the field in every error.

    Every field must be read exactly once: :meth:`done` refuses fields nobody asked
    for, so a document cannot smuggle data past the parser.
    """

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise JSONInputError(f"{path}: expected an object, got {_kind(data)}")
        self.data = data
        self.path = path
        self._seen: set[str] = set()

    def _get(self, name: str, optional: bool) -> Any:
        self._seen.add(name)
        if name not in self.data:
            if optional:
                return None
            raise JSONInputError(f"{self.path}.{name}: missing")
        return self.data[name]

    def _typed(self, name: str, kind: type | tuple[type, ...], label: str, optional: bool) -> Any:
        value = self._get(name, optional)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise JSONInputError(f"{self.path}.{name}: expected {label}, got {_kind(value)}")
        return value

    def string(
        self, name: str, *, optional: bool = False, pattern: re.Pattern[str] | None = None
    ) -> Any:
        value = self._typed(name, str, "a string", optional)
        if value is not None and pattern is not None and not pattern.fullmatch(value):
            raise JSONInputError(f"{self.path}.{name}: {value[:80]!r} is not of the expected form")
        return value

    def integer(self, name: str, *, optional: bool = False, minimum: int | None = None) -> Any:
        value = self._typed(name, int, "an integer", optional)
        if value is not None and minimum is not None and value < minimum:
            raise JSONInputError(f"{self.path}.{name}: must be at least {minimum}, got {value}")
        return value

    def mapping(self, name: str, *, optional: bool = False) -> Any:
        return self._typed(name, dict, "an object", optional)

    def sequence(self, name: str, *, optional: bool = False) -> Any:
        return self._typed(name, list, "a list", optional)

    def choice(self, name: str, choices: tuple[str, ...], *, optional: bool = False) -> Any:
        value = self.string(name, optional=optional)
        if value is not None and value not in choices:
            raise JSONInputError(
                f"{self.path}.{name}: {value!r} is not one of {', '.join(choices)}"
            )
        return value

    def format_header(self, expected: str, version: int, label: str) -> None:
        """Read ``format`` and ``version``: the document must be ``expected`` at ``version``."""
        fmt = self.string("format")
        if fmt != expected:
            raise JSONInputError(f"{self.path}.format: {fmt!r} is not a {label}")
        found = self.integer("version")
        if found != version:
            raise JSONInputError(
                f"{self.path}.version: format version {found} is not supported "
                f"(this wavesign reads version {version})"
            )

    def done(self) -> None:
        extra = sorted(set(self.data) - self._seen)
        if extra:
            raise JSONInputError(f"{self.path}: unknown field {extra[0]!r}")

    def sub(self, name: str) -> str:
        return f"{self.path}.{name}"


@contextmanager
def field_errors(path: str) -> Iterator[None]:
    """Prefix errors raised by a nested parser with ``path``."""
    try:
        yield
    except JSONInputError:
        raise
    except WavesignError as exc:
        raise JSONInputError(f"{path}: {exc}") from None


def read_list(values: list[Any], path: str, item: Callable[[Any, str], Any]) -> list[Any]:
    return [item(value, f"{path}[{index}]") for index, value in enumerate(values)]


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        type(None): "null",
    }.get(type(value), type(value).__name__)
