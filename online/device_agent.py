"""``wavesign-device``: the reference device agent, on python-tuf's ngclient.

One poll: refresh the TUF metadata from the broker (``URL/device/v1/repo/``) with
ngclient, which checks the root chain, signatures and thresholds, versions (no
rollback) and expiry; pick the highest ``custom.version`` among the targets for this
device's hardware id and tag; "install" it by recording it in ``device.json``; report
``download-*`` / ``install-*`` events to ``URL/device/v1/events``.

The state folder holds ngclient's metadata folder (kept across polls so that rollback
and freeze checks apply) and ``device.json``. Nothing in ``device.json`` changes
unless the whole poll verified.

The pure parts (choosing a target, building events, the state document) are plain
functions over data, usable and tested without a server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import tuf
import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import FetcherInterface, Updater
from wavesign.online.planning import parse_ci_version
from wavesign.shared.cliutil import main_for
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write
from wavesign.shared.strictjson import FieldReader, JSONInputError, loads_strict
from wavesign.shared.timefmt import utc_now_text

__all__ = [
    "EVENT_TYPES",
    "BearerTokenFetcher",
    "DeviceAgentError",
    "DeviceState",
    "PollResult",
    "StateFolder",
    "choose_target",
    "cli",
    "install_events",
    "main",
    "poll_once",
    "target_version",
]

REPO_PATH = "/device/v1/repo/"
EVENTS_PATH = "/device/v1/events"
STATE_FILE = "device.json"
METADATA_DIR = "metadata"
HTTP_CACHE_FILE = "etag.json"
#: The events of one successful update, in the order they happen.
EVENT_TYPES = ("download-started", "download-completed", "install-started", "install-completed")
MAX_STATE_SIZE = 4 * 1024 * 1024
HISTORY_LIMIT = 100

Warn = Callable[[str], None]


class DeviceAgentError(WavesignError):
    """A poll failed: the broker is unreachable, refused us, or served bad metadata."""


# --- pure core: which target, which events ------------------------------------------


def target_version(custom: Mapping[str, Any]) -> int | None:
    """``custom.version`` as an integer (fioctl writes it as a string), or None."""
    return parse_ci_version(custom.get("version"))


def _lists(custom: Mapping[str, Any], name: str, wanted: str) -> bool:
    values = custom.get(name)
    return isinstance(values, list) and wanted in values


def choose_target(
    targets: Mapping[str, Mapping[str, Any]],
    hardware_id: str,
    tag: str,
    installed_version: int | None,
) -> tuple[str, int] | None:
    """The target to install: ``(name, version)``, or None to stay where we are.

    ``targets`` maps target names to their ``custom`` objects. A candidate lists the
    device's hardware id in ``hardwareIds`` and its tag in ``tags``, is an OSTree
    target when it says what it is, and has an integer ``version``. The highest
    version wins (ties go to the smallest name, so the choice is stable); it is only
    returned when above ``installed_version``: a device never moves down, and never
    reinstalls what it runs.
    """
    best: tuple[int, str] | None = None
    for name, custom in targets.items():
        if not _lists(custom, "hardwareIds", hardware_id) or not _lists(custom, "tags", tag):
            continue
        if custom.get("targetFormat", "OSTREE") != "OSTREE":
            continue
        version = target_version(custom)
        if version is None:
            continue
        if best is None or version > best[0] or (version == best[0] and name < best[1]):
            best = (version, name)
    if best is None or (installed_version is not None and best[0] <= installed_version):
        return None
    return best[1], best[0]


def install_events(
    target: str, version: int, correlation_id: str, times: Sequence[str]
) -> list[dict[str, Any]]:
    """The four events of one update, all with one correlation id."""
    if len(times) != len(EVENT_TYPES):
        raise ValueError(f"need {len(EVENT_TYPES)} event times, got {len(times)}")
    return [
        {
            "type": event_type,
            "target": target,
            "version": version,
            "correlation_id": correlation_id,
            "time": at,
        }
        for event_type, at in zip(EVENT_TYPES, times, strict=True)
    ]


def utc_now() -> str:
    return utc_now_text()


@dataclass
class DeviceState:
    """``device.json``: who this device is, what it runs, and what it has yet to report."""

    hardware_id: str
    tag: str
    current_target: str | None = None
    current_version: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    pending_events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardware_id": self.hardware_id,
            "tag": self.tag,
            "current_target": self.current_target,
            "current_version": self.current_version,
            "history": self.history,
            "pending_events": self.pending_events,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = STATE_FILE) -> DeviceState:
        reader = FieldReader(data, path)
        state = cls(
            hardware_id=reader.string("hardware_id"),
            tag=reader.string("tag"),
            current_target=reader.string("current_target", optional=True),
            current_version=reader.integer("current_version", optional=True),
            history=reader.sequence("history"),
            pending_events=reader.sequence("pending_events"),
        )
        reader.done()
        if (state.current_target is None) != (state.current_version is None):
            raise JSONInputError(f"{path}: current_target and current_version go together")
        return state

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode() + b"\n"

    def installed(
        self, target: str, version: int, events: list[dict[str, Any]], targets_version: int
    ) -> DeviceState:
        """A new state with ``target`` installed and its events queued for reporting."""
        record = {
            "target": target,
            "version": version,
            "previous": self.current_target,
            "previous_version": self.current_version,
            "correlation_id": events[0]["correlation_id"],
            "targets_version": targets_version,
            "time": events[-1]["time"],
        }
        return DeviceState(
            hardware_id=self.hardware_id,
            tag=self.tag,
            current_target=target,
            current_version=version,
            history=[*self.history, record][-HISTORY_LIMIT:],
            pending_events=[*self.pending_events, *events],
        )


@dataclass(frozen=True)
class PollResult:
    """What one poll did; ``to_dict`` is the ``--json`` output."""

    updated: bool
    target: str | None
    version: int | None
    previous: str | None
    targets_version: int
    correlation_id: str | None = None
    available: str | None = None
    events_pending: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "updated": self.updated,
            "target": self.target,
            "version": self.version,
            "previous": self.previous,
            "targets_version": self.targets_version,
            "correlation_id": self.correlation_id,
            "available": self.available,
            "events_pending": self.events_pending,
        }

    def summary(self) -> str:
        if self.updated:
            was = self.previous or "nothing"
            return (
                f"installed {self.target} (version {self.version}, was {was}); "
                f"targets v{self.targets_version}"
            )
        if self.available:
            return (
                f"update available: {self.available} (not installed: --no-install); "
                f"running {self.target or 'nothing'}; targets v{self.targets_version}"
            )
        running = f"{self.target} (version {self.version})" if self.target else "nothing"
        return f"up to date: running {running}; targets v{self.targets_version}"


# --- I/O edges: HTTP, ngclient, the state folder --------------------------------------


class BearerTokenFetcher(FetcherInterface):
    """ngclient's HTTP fetcher with the device token on every request.

    Modelled on ``tuf.ngclient.Urllib3Fetcher`` (tuf 7.0.1), which has no way to add
    headers. urllib3 drops ``Authorization`` on cross-host redirects, so the token
    never leaks to another host.
    """

    def __init__(self, token: str, socket_timeout: float = 30.0) -> None:
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise DeviceAgentError("the device token must be printable ASCII without spaces")
        self.socket_timeout = socket_timeout
        self._pool = urllib3.PoolManager(
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"wavesign-device python-tuf/{tuf.__version__}",
            },
            retries=urllib3.Retry(total=2, redirect=2, backoff_factor=0.2),
        )
        #: url -> (ETag, local copy): ask with If-None-Match, answer a 304 from the copy.
        self.conditional: dict[str, tuple[str, Path]] = {}
        #: url -> (ETag, sha256 of the body) of 200 answers, to keep after a good poll.
        self.etags: dict[str, tuple[str, str]] = {}

    def _fetch(self, url: str) -> Iterator[bytes]:
        headers = dict(self._pool.headers)
        cached = self.conditional.get(url)
        if cached is not None and cached[1].is_file():
            headers["If-None-Match"] = cached[0]
        try:
            response = self._pool.request(
                "GET",
                url,
                headers=headers,
                preload_content=False,
                timeout=urllib3.Timeout(self.socket_timeout),
            )
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.TimeoutError):
                raise tuf_errors.SlowRetrievalError from exc
            raise
        if response.status == 304 and "If-None-Match" in headers and cached is not None:
            # Unchanged since the copy that ngclient verified and kept: hand it the
            # same bytes again, which it verifies again (and finds no newer version).
            response.release_conn()
            return iter([cached[1].read_bytes()])
        if response.status >= 300:
            response.close()
            raise tuf_errors.DownloadHTTPError(f"HTTP {response.status} for {url}", response.status)
        return self._chunks(response, url, response.headers.get("ETag"))

    def _chunks(
        self, response: urllib3.response.BaseHTTPResponse, url: str, etag: str | None
    ) -> Iterator[bytes]:
        body_hash = hashlib.sha256()
        try:
            for chunk in response.stream(64 * 1024):
                body_hash.update(chunk)
                yield chunk
        except urllib3.exceptions.TimeoutError as exc:
            raise tuf_errors.SlowRetrievalError from exc
        finally:
            response.release_conn()
        if etag:
            self.etags[url] = (etag, body_hash.hexdigest())

    def post_json(self, url: str, document: Any) -> int:
        """POST ``document`` as JSON; return the HTTP status (raises on no connection)."""
        response = self._pool.request(
            "POST",
            url,
            body=json.dumps(document).encode(),
            headers={**self._pool.headers, "Content-Type": "application/json"},
            timeout=urllib3.Timeout(self.socket_timeout),
        )
        return response.status


def _describe_tuf_error(exc: Exception, base_url: str) -> str:
    """One line for a failed refresh; the ngclient message says which check failed."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        if exc.status_code in (401, 403):
            return f"the broker refused the device token (HTTP {exc.status_code}) at {base_url}"
        return f"metadata download failed: {detail}"
    if isinstance(exc, tuf_errors.EqualVersionNumberError | tuf_errors.BadVersionNumberError):
        # ngclient's wording ("Expected targets.json version 2, got 4") reads
        # backwards out of context: say first that the broker went back in time.
        return (
            "TUF rollback refused: the broker served older metadata than this device "
            f"already trusts ({detail.rstrip('.')})"
        )
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return f"TUF metadata expired: {detail}"
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return f"TUF signature check failed: {detail}"
    if isinstance(exc, tuf_errors.RepositoryError):
        return f"TUF verification failed: {detail}"
    cause = exc.__cause__
    if isinstance(exc, tuf_errors.DownloadError) and cause is not None:
        reason = getattr(cause, "reason", None) or cause
        return f"cannot reach the broker at {base_url}: {reason}"
    return f"metadata download failed: {detail}"


def _strip_slash(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise DeviceAgentError(f"--url must start with http:// or https://, got {url[:60]!r}")
    return url.rstrip("/")


class StateFolder:
    """The device's state folder: ``metadata/`` for ngclient and ``device.json``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metadata_dir = self.path / METADATA_DIR
        self.state_file = self.path / STATE_FILE
        self.http_cache = self.path / HTTP_CACHE_FILE

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold a lock on the folder: ngclient supports one updater per metadata folder.

        The lock is taken on the directory itself, so no lock file is left behind.
        """
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DeviceAgentError(f"another poll is running on {self.path}") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def has_trusted_root(self) -> bool:
        return (self.metadata_dir / "root.json").exists()

    def load_timestamp_etag(self, url: str) -> str | None:
        """The ETag of metadata/timestamp.json, if that file is still what came with it."""
        try:
            data = loads_strict(self.http_cache.read_bytes(), what="etag", max_size=4096)
            local = (self.metadata_dir / "timestamp.json").read_bytes()
        except (OSError, JSONInputError):
            return None  # only an optimisation: without it the poll fetches in full
        if not isinstance(data, dict) or data.get("url") != url:
            return None
        if data.get("sha256") != hashlib.sha256(local).hexdigest():
            return None  # the kept copy is another version (or damaged): fetch in full
        etag = data.get("etag")
        return etag if isinstance(etag, str) and etag.isascii() and etag.isprintable() else None

    def save_timestamp_etag(self, url: str, answer: tuple[str, str] | None) -> None:
        """Remember the ETag of the timestamp.json a successful poll fetched."""
        if answer is None:
            return  # a 304, or a server without ETags: what is stored still holds
        etag, sha256 = answer
        document = {"url": url, "etag": etag, "sha256": sha256}
        atomic_write(self.http_cache, json.dumps(document).encode() + b"\n")

    def load(self) -> DeviceState | None:
        if not self.state_file.exists():
            return None
        data = loads_strict(
            self.state_file.read_bytes(), what=str(self.state_file), max_size=MAX_STATE_SIZE
        )
        return DeviceState.from_dict(data, str(self.state_file))

    def save(self, state: DeviceState) -> None:
        atomic_write(self.state_file, state.to_bytes(), mode=0o600)


def _identity(folder: StateFolder, hardware_id: str | None, tag: str | None) -> DeviceState:
    """The stored identity, or a new one from the flags on the first poll."""
    stored = folder.load()
    if stored is None:
        if not hardware_id or not tag:
            raise DeviceAgentError(
                f"{folder.state_file} does not exist yet: the first poll needs "
                "--hardware-id and --tag"
            )
        return DeviceState(hardware_id=hardware_id, tag=tag)
    # A device keeps its hardware id and tag for life (architecture: re-provision to
    # change them), so a flag that disagrees is a mistake, not a request.
    if hardware_id is not None and hardware_id != stored.hardware_id:
        raise DeviceAgentError(
            f"{folder.state_file} is for hardware id {stored.hardware_id!r}, not {hardware_id!r}"
        )
    if tag is not None and tag != stored.tag:
        raise DeviceAgentError(f"{folder.state_file} is for tag {stored.tag!r}, not {tag!r}")
    return stored


def _refresh(
    metadata_dir: Path, repo_url: str, fetcher: BearerTokenFetcher, bootstrap: bytes | None
) -> Updater:
    try:
        updater = Updater(str(metadata_dir), repo_url, fetcher=fetcher, bootstrap=bootstrap)
        updater.refresh()
    except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
        raise DeviceAgentError(_describe_tuf_error(exc, repo_url)) from None
    except ValueError as exc:
        # Metadata that does not even parse (python-tuf raises DeserializationError,
        # a RepositoryError, for most of it; ValueError covers the rest).
        raise DeviceAgentError(f"TUF verification failed: {exc}") from None
    return updater


def _verified_targets(updater: Updater) -> tuple[int, dict[str, dict[str, Any]]]:
    """The top-level targets that ngclient verified in this refresh.

    ngclient 7.0.1 has no public way to list targets (only ``get_targetinfo(name)``),
    so this reads its trusted set, which holds only metadata that passed every check.
    wavesign does not delegate, so top-level targets are all there is. The chosen
    target is looked up again through the public ``get_targetinfo`` before use.
    """
    targets = updater._trusted_set.targets  # internal, read-only: see docstring
    customs = {
        name: dict(info.custom) if isinstance(info.custom, Mapping) else {}
        for name, info in targets.targets.items()
    }
    return targets.version, customs


def _fetch_first_root(repo_url: str, fetcher: BearerTokenFetcher) -> bytes:
    try:
        return fetcher.download_bytes(f"{repo_url}1.root.json", 512 * 1024)
    except tuf_errors.DownloadError as exc:
        raise DeviceAgentError(_describe_tuf_error(exc, repo_url)) from None


def _report(fetcher: BearerTokenFetcher, events_url: str, events: list[dict[str, Any]]) -> str:
    """POST the queued events; return "" on success or why it failed."""
    try:
        status = fetcher.post_json(events_url, events)
    except urllib3.exceptions.HTTPError as exc:
        return f"cannot reach {events_url}: {getattr(exc, 'reason', None) or exc}"
    if not 200 <= status < 300:
        return f"{events_url} answered HTTP {status}"
    return ""


def poll_once(
    url: str,
    token: str,
    state_dir: str | Path,
    *,
    hardware_id: str | None = None,
    tag: str | None = None,
    bootstrap_root: bytes | None = None,
    install: bool = True,
    warn: Warn | None = None,
) -> PollResult:
    """One poll: verify, choose, record, report. Raises :class:`DeviceAgentError`.

    ``warn(message)`` receives non-fatal warnings (trust on first use, events that
    could not be reported yet and stay queued in ``device.json``).
    """
    base = _strip_slash(url)
    folder = StateFolder(state_dir)
    folder.path.mkdir(parents=True, exist_ok=True)
    with folder.locked():
        return _poll_locked(base, folder, token, hardware_id, tag, bootstrap_root, install, warn)


def _poll_locked(
    base: str,
    folder: StateFolder,
    token: str,
    hardware_id: str | None,
    tag: str | None,
    bootstrap_root: bytes | None,
    install: bool,
    warn: Warn | None,
) -> PollResult:
    repo_url = base + REPO_PATH
    state = _identity(folder, hardware_id, tag)
    fetcher = BearerTokenFetcher(token)
    timestamp_url = repo_url + "timestamp.json"
    timestamp_etag = folder.load_timestamp_etag(timestamp_url)
    if timestamp_etag is not None:
        fetcher.conditional[timestamp_url] = (
            timestamp_etag,
            folder.metadata_dir / "timestamp.json",
        )

    scratch: Path | None = None
    if not folder.has_trusted_root():
        if bootstrap_root is None:
            bootstrap_root = _fetch_first_root(repo_url, fetcher)
            if warn is not None:
                warn(
                    f"trusting {repo_url}1.root.json on first use; pass --bootstrap-root "
                    "to pin the root instead"
                )
        # The first poll works in a scratch folder that becomes metadata/ only once
        # the poll succeeded: a failed first poll leaves no trust anchor behind.
        scratch = Path(tempfile.mkdtemp(prefix=".metadata.", dir=folder.path))
    try:
        if scratch is not None:
            updater = _refresh(scratch, repo_url, fetcher, bootstrap_root)
        else:
            # Later polls trust the root that earlier polls verified (ngclient keeps
            # it as metadata/root.json), not a file given again on the command line.
            updater = _refresh(folder.metadata_dir, repo_url, fetcher, None)
        targets_version, customs = _verified_targets(updater)
        choice = choose_target(customs, state.hardware_id, state.tag, state.current_version)
        if choice is not None:
            info = updater.get_targetinfo(choice[0])
            if info is None or target_version(info.custom or {}) != choice[1]:
                raise DeviceAgentError(f"target {choice[0]} vanished from the verified metadata")
        if scratch is not None and install:
            scratch.rename(folder.metadata_dir)
        if scratch is None or install:
            folder.save_timestamp_etag(timestamp_url, fetcher.etags.get(timestamp_url))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    if choice is None or not install:
        if install and not folder.state_file.exists():
            folder.save(state)  # remember the identity given on the first poll
        return PollResult(
            updated=False,
            target=state.current_target,
            version=state.current_version,
            previous=None,
            targets_version=targets_version,
            available=choice[0] if choice else None,
            events_pending=_deliver(folder, fetcher, base, state, warn) if install else 0,
        )

    name, version = choice
    correlation_id = str(uuid.uuid4())
    # The reference agent has no payload to fetch or apply; the events mark the
    # steps a real agent (aktualizr-lite) goes through, in order.
    times = [utc_now() for _ in EVENT_TYPES]
    events = install_events(name, version, correlation_id, times)
    new_state = state.installed(name, version, events, targets_version)
    folder.save(new_state)
    return PollResult(
        updated=True,
        target=name,
        version=version,
        previous=state.current_target,
        targets_version=targets_version,
        correlation_id=correlation_id,
        events_pending=_deliver(folder, fetcher, base, new_state, warn),
    )


def _deliver(
    folder: StateFolder,
    fetcher: BearerTokenFetcher,
    base: str,
    state: DeviceState,
    warn: Warn | None,
) -> int:
    """Send the queued events; return how many are still queued afterwards."""
    if not state.pending_events:
        return 0
    problem = _report(fetcher, base + EVENTS_PATH, state.pending_events)
    if problem:
        if warn is not None:
            warn(
                f"{len(state.pending_events)} events not reported yet ({problem}); "
                "they stay queued for the next poll"
            )
        return len(state.pending_events)
    state.pending_events = []
    folder.save(state)
    return 0


# --- the command line -------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wavesign")
def cli() -> None:
    """wavesign-device: the reference device agent (python-tuf ngclient).

    It polls the broker's TUF repository for one device, verifies everything, and
    "installs" the highest version for the device's hardware id and tag.
    See `wavesign-device poll --help`.
    """


@cli.command()
@click.option(
    "--url",
    required=True,
    envvar="WAVESIGN_DEVICE_URL",
    help="Broker base URL, e.g. https://ota.example.com (env WAVESIGN_DEVICE_URL).",
)
@click.option(
    "--token",
    required=True,
    envvar="WAVESIGN_DEVICE_TOKEN",
    help="Device token from `wavesign devices register` (env WAVESIGN_DEVICE_TOKEN).",
)
@click.option(
    "--state",
    "state_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="State folder: TUF metadata and device.json, kept between polls.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document per poll.")
@click.option(
    "--hardware-id",
    default=None,
    help="Hardware id (needed on the first poll; must match afterwards).",
)
@click.option("--tag", default=None, help="Tag (needed on the first poll; must match afterwards).")
@click.option(
    "--bootstrap-root",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Trusted root.json for the first poll (default: trust 1.root.json on first "
    "use, with a warning).",
)
@click.option("--loop", is_flag=True, help="Poll again every --interval seconds.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds between polls with --loop.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="With --loop: stop after this many polls (default: forever).",
)
@click.option(
    "--no-install",
    is_flag=True,
    help="Verify and report what would be installed; change nothing in device.json, "
    "report no events, and keep no trust anchor from a first poll.",
)
def poll(
    url: str,
    token: str,
    state_dir: str,
    as_json: bool,
    hardware_id: str | None,
    tag: str | None,
    bootstrap_root: str | None,
    loop: bool,
    interval: float,
    count: int | None,
    no_install: bool,
) -> None:
    """Poll once: verify the TUF metadata, pick the target, "install", report.

    \b
    Example (first poll of a new device, root pinned):
      wavesign-device poll --url https://ota.example.com --token "$TOKEN" \\
          --state /var/lib/wavesign-device --hardware-id raspberrypi4-64 \\
          --tag production --bootstrap-root 1.root.json

    Any verification failure (bad signatures, a rollback, expired metadata, a
    refused token) prints one `error:` line, exits 1 and changes nothing in
    device.json. With --loop, a failed poll is reported and the loop goes on.
    """
    root_bytes = Path(bootstrap_root).read_bytes() if bootstrap_root else None

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    def one() -> None:
        result = poll_once(
            url,
            token,
            state_dir,
            hardware_id=hardware_id,
            tag=tag,
            bootstrap_root=root_bytes,
            install=not no_install,
            warn=warn,
        )
        click.echo(json.dumps(result.to_dict(), sort_keys=True) if as_json else result.summary())

    if not loop:
        one()
        return
    done = 0
    while count is None or done < count:
        if done:
            time.sleep(interval)
        try:
            one()
        except WavesignError as exc:
            click.echo(f"error: {exc}", err=True)
        done += 1


main = main_for(cli)

if __name__ == "__main__":
    main()
