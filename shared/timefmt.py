"""UTC times as wavesign writes them everywhere: whole seconds, ``YYYY-MM-DDTHH:MM:SSZ``.

TUF's ``expires`` form; also every time in bundles, journals, events and evidence.
Whole seconds only: device clients do not all parse fractions.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["TIME_FORMAT", "format_utc", "parse_utc", "utc_now_text"]

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_utc(moment: datetime) -> str:
    """``moment`` in UTC, whole seconds (a naive datetime is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(TIME_FORMAT)


def parse_utc(text: str) -> datetime:
    """The aware UTC datetime of ``text``; ``ValueError`` if it is not in the format."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def utc_now_text() -> str:
    return format_utc(datetime.now(UTC))
