"""``wavesign``: the operator's command line.

``server ...`` works on the local data folder; every other command talks to the broker
over HTTP (``WAVESIGN_URL``, ``WAVESIGN_TOKEN``). Lists and shows take ``--json``.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from wavesign.shared.cliutil import main_for
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write

from .cli_common import CONTEXT, client_for
from .cli_demo import demo
from .cli_evidence import evidence
from .cli_status import fleet, status, wave_status
from .client import DEFAULT_URL, ApiClient


class CLIError(WavesignError):
    """A command-line input is wrong (a file, a CSV row, a missing option)."""


# -- helpers ----------------------------------------------------------------------------


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Print ``rows`` as aligned columns; ``columns`` is (header, key)."""
    cells = [[h for h, _ in columns]]
    for row in rows:
        cells.append(["" if row.get(k) is None else str(row.get(k)) for _, k in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for line in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CLIError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{what} {path}: is a folder") from None


# -- the group ----------------------------------------------------------------------------
@click.group(context_settings=CONTEXT)
@click.version_option(package_name="wavesign")
@click.option(
    "--url",
    envvar="WAVESIGN_URL",
    default=None,
    help=f"Broker API base URL [env WAVESIGN_URL; default {DEFAULT_URL}].",
)
@click.option(
    "--token", envvar="WAVESIGN_TOKEN", default=None, help="API token [env WAVESIGN_TOKEN]."
)
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
    """wavesign: production OTA waves with an online broker and an offline signer.

    The operator registers CI targets and devices, plans waves, exports signing
    requests to the air-gapped appliance (`wavesign-offline`) and imports its
    signatures. See `wavesign COMMAND --help`.

    \b
    Example:
      wavesign server init --data ./wavesign-data
      export WAVESIGN_TOKEN=$(cat ./wavesign-data/admin.token)
      wavesign server run --data ./wavesign-data &
      wavesign targets add --from-json ci/targets.json
    """
    ctx.obj = {"url": url, "token": token}


# -- server ---------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def server() -> None:
    """Create, migrate and run the broker (works on the local data folder)."""


DATA_OPTION = click.option(
    "--data",
    "data_dir",
    envvar="WAVESIGN_DATA",
    default=None,
    help="Server data folder [env WAVESIGN_DATA; default ./wavesign-data].",
)


@server.command("init")
@DATA_OPTION
@click.option(
    "--db",
    "db_url",
    default=None,
    help="Database URL (default: SQLite DIR/wavesign.db), e.g. postgresql+psycopg://u@host/db.",
)
@click.option("--factory", default="wavesign", show_default=True, help="Factory name.")
def server_init(data_dir: str | None, db_url: str | None, factory: str) -> None:
    """Create the data folder, database, online keys and the first admin token.

    The admin token is written to DIR/admin.token (mode 0600) and printed once.

    \b
    Example:
      wavesign server init --data /srv/wavesign --factory acme
      wavesign server init --data /srv/ws --db postgresql+psycopg://ws@db.example/ws
    """
    from .datadir import init_data_dir, redact_url

    result = init_data_dir(data_dir, db_url, factory)
    click.echo(f"data folder: {result.data.path}")
    click.echo(f"database: {redact_url(result.db_url)} (schema {result.revision})")
    click.echo("online keys: targets, snapshot, timestamp (keys/*.key, mode 0600)")
    click.echo(f"admin token (also in {result.data.path / 'admin.token'}):")
    click.echo(result.admin_token)


@server.command("migrate")
@DATA_OPTION
def server_migrate(data_dir: str | None) -> None:
    """Upgrade the database schema to this wavesign's newest revision.

    \b
    Example:
      wavesign server migrate --data /srv/wavesign
    """
    from .datadir import DataDir

    store = DataDir.resolve(data_dir).open_store()
    try:
        revision = store.migrate()
    finally:
        store.close()
    click.echo(f"database schema at revision {revision}")


@server.command("run")
@DATA_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--server",
    "engine",
    type=click.Choice(["granian", "uvicorn"]),
    default="granian",
    show_default=True,
    help="HTTP server. granian answers device polls about twice as fast as uvicorn "
    "(docs/performance.md).",
)
def server_run(data_dir: str | None, host: str, port: int, workers: int, engine: str) -> None:
    """Serve the operator API and the device repository.

    Several workers need PostgreSQL, or share one SQLite file (one writer at a time).
    Workers (and several servers on one database) switch to each new publication
    together, so a device may poll any of them.

    \b
    Example:
      wavesign server run --data /srv/wavesign --host 0.0.0.0 --port 8700 --workers 4
      wavesign server run --data /srv/wavesign --server uvicorn
    """
    from .datadir import DataDir

    data = DataDir.resolve(data_dir)
    data.config()  # refuse early, with one line, if the folder is not initialized
    os.environ["WAVESIGN_DATA"] = str(data.path)
    target = "wavesign.online.app:app_from_env"
    if engine == "granian":
        from granian import Granian
        from granian.constants import Interfaces

        Granian(
            target,
            address=host,
            port=port,
            workers=workers,
            interface=Interfaces.ASGI,
            factory=True,
            log_access=False,
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        target,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
    )


# -- tokens ---------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def tokens() -> None:
    """API tokens (admin only). Tokens are shown once and stored hashed."""


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice(["admin", "operator", "auditor"]))
@click.option("--name", default=None, help="A unique name (default: role-<random>).")
@click.pass_context
def tokens_create(ctx: click.Context, role: str, name: str | None) -> None:
    """Create a token and print it once.

    \b
    Example:
      wavesign tokens create --role auditor --name audit-2026
    """
    result = client_for(ctx).post("/tokens", {"role": role, "name": name})
    click.echo(f"token {result['name']} ({result['role']}):", err=True)
    click.echo(result["token"])


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tokens_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens (never their values)."""
    rows = client_for(ctx).get("/tokens")
    if as_json:
        _echo_json(rows)
        return
    _table(
        rows,
        [("NAME", "name"), ("ROLE", "role"), ("CREATED AT", "created_at"),
         ("REVOKED AT", "revoked_at")],
    )  # fmt: skip


@tokens.command("revoke")
@click.argument("name")
@click.pass_context
def tokens_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a token by name."""
    client_for(ctx).delete(f"/tokens/{name}")
    click.echo(f"token {name} revoked")


# -- targets --------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def targets() -> None:
    """CI targets: register builds, list them, show production targets."""


@targets.command("add")
@click.argument("name", required=False)
@click.option("--from-json", "from_json", default=None, help="A CI targets.json (or part).")
@click.option("--version", "version", type=click.IntRange(0), default=None, help="CI build.")
@click.option("--hardware-id", "hardware_ids", multiple=True, help="Hardware id (repeatable).")
@click.option("--sha256", default=None, help="sha256 of the target (64 hex).")
@click.option("--length", type=click.IntRange(0), default=None, help="Length in bytes.")
@click.option("--tag", "tags", multiple=True, help="custom.tags entry (repeatable).")
@click.option("--custom", "custom_json", default=None, help="More custom fields, as JSON.")
@click.pass_context
def targets_add(
    ctx: click.Context,
    name: str | None,
    from_json: str | None,
    version: int | None,
    hardware_ids: tuple[str, ...],
    sha256: str | None,
    length: int | None,
    tags: tuple[str, ...],
    custom_json: str | None,
) -> None:
    """Register CI targets, from a CI targets file or one by one. All or nothing.

    \b
    Example:
      wavesign targets add --from-json ci/targets.json
      wavesign targets add intel-corei7-64-lmp-42 --version 42 \\
          --hardware-id intel-corei7-64 --sha256 <64 hex> --length 1234 --tag main
    """
    from .targets_input import parse_targets_bytes

    if from_json is not None:
        if name is not None:
            raise click.UsageError("give either --from-json FILE or NAME with its options")
        entries = parse_targets_bytes(_read_file(from_json, "targets file"), from_json)
    else:
        if name is None:
            raise click.UsageError("give --from-json FILE, or NAME with --version etc.")
        missing = [
            flag
            for flag, value in (("--version", version), ("--sha256", sha256), ("--length", length))
            if value is None
        ]
        if not hardware_ids:
            missing.append("--hardware-id")
        if missing:
            raise click.UsageError(f"NAME needs {', '.join(missing)}")
        custom: dict[str, Any] = {}
        if custom_json is not None:
            try:
                custom = json.loads(custom_json)
            except ValueError:
                raise CLIError("--custom is not valid JSON") from None
            if not isinstance(custom, dict):
                raise CLIError("--custom must be a JSON object")
        custom.update(version=str(version), hardwareIds=list(hardware_ids))
        if tags:
            custom["tags"] = list(tags)
        entries = {name: {"length": length, "hashes": {"sha256": sha256}, "custom": custom}}
    result = client_for(ctx).post("/targets", {"targets": entries})
    click.echo(f"added {len(result['added'])} targets, {len(result['unchanged'])} unchanged")


@targets.command("list")
@click.option("--version", type=int, default=None, help="Only this CI build.")
@click.option("--tag", default=None, help="Only targets whose custom.tags holds TAG.")
@click.option("--production", default=None, metavar="TAG", help="The production targets of TAG.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print a list of {"name", "length", "hashes", "custom"}.',
)
@click.pass_context
def targets_list(
    ctx: click.Context, version: int | None, tag: str | None, production: str | None, as_json: bool
) -> None:
    """List CI targets, or a tag's production targets.

    \b
    Example:
      wavesign targets list --version 42
      wavesign targets list --production production --json
    """
    entries = client_for(ctx).get("/targets", version=version, tag=tag, production=production)
    if as_json:
        _echo_json([{"name": n, **e} for n, e in sorted(entries.items())])
        return
    rows = [
        {
            "name": n,
            "version": e.get("custom", {}).get("version"),
            "hw": ",".join(e.get("custom", {}).get("hardwareIds", [])),
            "tags": ",".join(e.get("custom", {}).get("tags", []) or []),
            "sha256": e.get("hashes", {}).get("sha256", "")[:16],
        }
        for n, e in sorted(entries.items())
    ]
    _table(
        rows,
        [("NAME", "name"), ("VERSION", "version"), ("HARDWARE IDS", "hw"), ("TAGS", "tags"),
         ("SHA256", "sha256")],
    )  # fmt: skip


# -- groups ---------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def groups() -> None:
    """Device groups (rollout targets, e.g. canary)."""


@groups.command("create")
@click.argument("name")
@click.pass_context
def groups_create(ctx: click.Context, name: str) -> None:
    """Create a device group.

    \b
    Example:
      wavesign groups create canary
    """
    client_for(ctx).post("/groups", {"name": name})
    click.echo(f"group {name} created")


@groups.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def groups_list(ctx: click.Context, as_json: bool) -> None:
    """List device groups with their device counts."""
    rows = client_for(ctx).get("/groups")
    if as_json:
        _echo_json(rows)
        return
    _table(rows, [("NAME", "name"), ("DEVICES", "devices"), ("CREATED AT", "created_at")])


# -- devices --------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def devices() -> None:
    """Devices: register, import, list, show, move between groups."""


@devices.command("register")
@click.argument("name")
@click.option("--hardware-id", required=True)
@click.option("--tag", required=True)
@click.option("--group", default=None)
@click.option("--json", "as_json", is_flag=True, help='Print {"uuid", "name", "token"}.')
@click.pass_context
def devices_register(
    ctx: click.Context, name: str, hardware_id: str, tag: str, group: str | None, as_json: bool
) -> None:
    """Register one device; prints its uuid and its device token (once).

    \b
    Example:
      wavesign devices register gw-0001 --hardware-id intel-corei7-64 \\
          --tag production --group canary
    """
    spec = {"name": name, "hardware_id": hardware_id, "tag": tag, "group": group}
    issued = client_for(ctx).post("/devices", {"devices": [spec]})[0]
    if as_json:
        _echo_json({"uuid": issued["uuid"], "name": issued["name"], "token": issued["token"]})
        return
    click.echo(f"uuid: {issued['uuid']}")
    click.echo(f"token: {issued['token']}")


def _read_devices_csv(path: str) -> list[dict[str, Any]]:
    text = _read_file(path, "CSV file").decode("utf-8-sig", errors="strict")
    reader = csv.DictReader(text.splitlines())
    expected = ["name", "hardware_id", "tag", "group"]
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != expected:
        raise CLIError(f"{path}: the header must be {','.join(expected)}")
    rows: list[dict[str, Any]] = []
    for number, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise CLIError(f"{path} line {number}: expected 4 columns")
        rows.append(
            {
                "name": row["name"],
                "hardware_id": row["hardware_id"],
                "tag": row["tag"],
                "group": row["group"] or None,
            }
        )
    if not rows:
        raise CLIError(f"{path}: no devices")
    return rows


@devices.command("import")
@click.argument("csv_file", metavar="CSV")
@click.option("--tokens-out", required=True, help="Where to write name,uuid,token (mode 0600).")
@click.pass_context
def devices_import(ctx: click.Context, csv_file: str, tokens_out: str) -> None:
    """Register every device of a CSV (columns name,hardware_id,tag,group), all or nothing.

    The device tokens are written to --tokens-out (CSV name,uuid,token, mode 0600).

    \b
    Example:
      wavesign devices import fleet.csv --tokens-out fleet-tokens.csv
    """
    if Path(tokens_out).exists():
        raise CLIError(f"{tokens_out} exists already: choose a new file for the tokens")
    # The tokens exist only in the server's answer: find out now, not after the devices
    # are registered, that they could not be written.
    folder = Path(tokens_out).parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write the tokens file: {folder} is not a writable folder")
    rows = _read_devices_csv(csv_file)
    issued = client_for(ctx).post("/devices", {"devices": rows})
    lines = ["name,uuid,token"] + [f"{d['name']},{d['uuid']},{d['token']}" for d in issued]
    atomic_write(tokens_out, ("\n".join(lines) + "\n").encode(), mode=0o600)
    click.echo(f"imported {len(issued)} devices; tokens in {tokens_out}")


@devices.command("list")
@click.option("--group", default=None)
@click.option("--tag", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def devices_list(ctx: click.Context, group: str | None, tag: str | None, as_json: bool) -> None:
    """List devices, optionally of one group or tag."""
    rows = client_for(ctx).get("/devices", group=group, tag=tag)
    if as_json:
        _echo_json(rows)
        return
    _table(
        rows,
        [("UUID", "uuid"), ("NAME", "name"), ("HARDWARE ID", "hardware_id"), ("TAG", "tag"),
         ("GROUP", "group"), ("TARGET", "current_target"), ("LAST SEEN", "last_seen")],
    )  # fmt: skip


@devices.command("show")
@click.argument("device_uuid", metavar="UUID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def devices_show(ctx: click.Context, device_uuid: str, as_json: bool) -> None:
    """Show one device."""
    device = client_for(ctx).get(f"/devices/{device_uuid}")
    if as_json:
        _echo_json(device)
        return
    for key in ("uuid", "name", "hardware_id", "tag", "group", "current_target", "last_seen"):
        click.echo(f"{key}: {'' if device.get(key) is None else device[key]}")
    click.echo(f"waves: {', '.join(device.get('waves', [])) or '-'}")


@devices.command("move")
@click.argument("device_uuid", metavar="UUID")
@click.option("--group", required=True)
@click.pass_context
def devices_move(ctx: click.Context, device_uuid: str, group: str) -> None:
    """Move a device to another group (it stays in the active waves it is in)."""
    client_for(ctx).post(f"/devices/{device_uuid}/move", {"group": group})
    click.echo(f"device {device_uuid} moved to group {group}")


# -- waves ----------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def wave() -> None:
    """Waves: plan, roll out, cancel and complete production updates (fioctl's words)."""


@wave.command("init")
@click.argument("name")
@click.argument("version", type=click.IntRange(0))
@click.argument("tag")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None, help="Default 365.")
@click.option("--expires-at", default=None, help="RFC 3339 time; overrides --expires-days.")
@click.option("--prune", default=None, help="CI versions to remove, comma separated.")
@click.option("--source-tag", default=None, help="Only CI targets whose custom.tags hold T.")
@click.option("--dry-run", is_flag=True, help="Print the planned wave; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def wave_init(
    ctx: click.Context,
    name: str,
    version: int,
    tag: str,
    expires_days: int | None,
    expires_at: str | None,
    prune: str | None,
    source_tag: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Plan a wave and its signing request (W, and the revert R used if canceled).

    \b
    Example:
      wavesign wave init v2.0-update 42 production
      wavesign requests export <ID> --out /media/usb/wave-v2.0-update.request.json
    """
    prune_list: list[int] = []
    for item in (prune or "").split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit():
            raise CLIError(f"--prune {prune!r}: versions are build numbers, comma separated")
        prune_list.append(int(item))
    body = {
        "name": name,
        "version": version,
        "tag": tag,
        "expires_days": expires_days,
        "expires_at": expires_at,
        "prune": prune_list,
        "source_tag": source_tag,
        "dry_run": dry_run,
    }
    result = client_for(ctx).post("/waves", body)
    for warning in result.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _echo_json(result)
        return
    if dry_run:
        click.echo(json.dumps(result["wave"], indent=2, sort_keys=True))
        click.echo(
            f"(dry run) wave {name}: targets version {result['wave_version']}, "
            f"revert version {result['revert_version']}, expires {result['expires']}"
        )
        return
    click.echo(
        f"wave {name} for tag {tag} version {version}: awaiting signatures "
        f"(targets v{result['wave_version']}, revert v{result['revert_version']}, "
        f"expires {result['expires']})"
    )
    click.echo(f"added: {', '.join(result['added'])}")
    if result["pruned"]:
        click.echo(f"pruned: {', '.join(result['pruned'])}")
    click.echo(f"request: {result['request_id']}")
    click.echo(
        f"next: wavesign requests export {result['request_id']} --out FILE (or --qr-png DIR)"
    )


def _read_uuids_option(value: str) -> list[str]:
    from .rollout import parse_uuids_option

    def read(path: str) -> str:
        return _read_file(path, "uuids file").decode("utf-8")

    return list(parse_uuids_option(value, read))


@wave.command("rollout")
@click.argument("name")
@click.argument("group_arg", metavar="[GROUP]", required=False)
@click.option("--group", default=None)
@click.option("--limit", default=None, help="N devices or N% of the group.")
@click.option("--uuids", default=None, help="Comma separated uuids, or @FILE.")
@click.option("--dry-run", is_flag=True, help="Show the selection; change nothing.")
@click.option("--print-uuids", is_flag=True, help="Print the uuids rolled out to.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def wave_rollout(
    ctx: click.Context,
    name: str,
    group_arg: str | None,
    group: str | None,
    limit: str | None,
    uuids: str | None,
    dry_run: bool,
    print_uuids: bool,
    as_json: bool,
) -> None:
    """Show an active wave to more devices: a group, a --limit, or --uuids.

    A whole group (no --limit, no --uuids) also covers devices that join it later.

    \b
    Example:
      wavesign wave rollout v2.0-update canary
      wavesign wave rollout v2.0-update --group us-east-1 --limit 10%
    """
    if group_arg is not None and group is not None and group_arg != group:
        raise click.UsageError("GROUP and --group name different groups")
    group = group or group_arg
    uuid_list = _read_uuids_option(uuids) if uuids is not None else None
    if limit is not None:
        from .rollout import parse_limit

        parse_limit(limit)
    body = {"group": group, "limit": limit, "uuids": uuid_list, "dry_run": dry_run}
    body["return_uuids"] = print_uuids
    result = client_for(ctx).post(f"/waves/{name}/rollout", body)
    if as_json:
        _echo_json(result)
        return
    click.echo(result["message"])
    if result.get("note"):
        click.echo(result["note"])
    if print_uuids or dry_run:
        for device_uuid in result.get("uuids", []):
            click.echo(device_uuid)


@wave.command("cancel")
@click.argument("name")
@click.pass_context
def wave_cancel(ctx: click.Context, name: str) -> None:
    """Cancel a wave: its devices get the revert targets; devices on it keep their version."""
    client_for(ctx).post(f"/waves/{name}/cancel")
    click.echo(f"wave {name} canceled")


@wave.command("complete")
@click.argument("name")
@click.pass_context
def wave_complete(ctx: click.Context, name: str) -> None:
    """Complete a wave: its signed targets become the tag's production targets."""
    result = client_for(ctx).post(f"/waves/{name}/complete")
    click.echo(f"wave {name} complete: production targets of tag {result['tag']} updated")


WAVE_COLUMNS = [
    ("NAME", "name"),
    ("VERSION", "version"),
    ("TAG", "tag"),
    ("STATUS", "status"),
    ("CREATED AT", "created_at"),
    ("FINISHED AT", "finished_at"),
]


@wave.command("list")
@click.option(
    "--status", type=click.Choice(["awaiting-signatures", "active", "complete", "canceled"])
)
@click.option("--tag", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def wave_list(ctx: click.Context, status: str | None, tag: str | None, as_json: bool) -> None:
    """List waves (NAME, VERSION, TAG, STATUS, CREATED AT, FINISHED AT)."""
    rows = client_for(ctx).get("/waves", status=status, tag=tag)
    if as_json:
        _echo_json(rows)
        return
    _table(rows, WAVE_COLUMNS)


def _rollout_line(rollout: dict[str, Any]) -> str:
    where = f"in group {rollout['group']}" if rollout.get("group") else "by uuid"
    if rollout.get("full_group"):
        what = f"all devices {where} ({rollout['devices']} at the time)"
    else:
        what = f"{rollout['devices']} devices {where}"
    return f"{rollout['at']}: rollout to {what} by {rollout['by']}"


@wave.command("show")
@click.argument("name")
@click.option("--show-targets", is_flag=True, help="Print the wave's targets JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def wave_show(ctx: click.Context, name: str, show_targets: bool, as_json: bool) -> None:
    """Show a wave and its rollout history."""
    info = client_for(ctx).get(f"/waves/{name}", show_targets=show_targets or None)
    if as_json:
        _echo_json(info)
        return
    click.echo(f"Name: {info['name']}")
    click.echo(f"Version: {info['version']}")
    click.echo(f"Tag: {info['tag']}")
    click.echo(f"Status: {info['status']}")
    click.echo(f"Created At: {info['created_at']}")
    click.echo(f"Created By: {info['created_by']}")
    click.echo(f"Signing request: {info['request_id']}")
    click.echo(f"Targets version: {info['wave_version']} (revert {info['revert_version']})")
    click.echo(f"Expires: {info['expires']}")
    if info["rollouts"]:
        click.echo("Rollout history:")
        for rollout in info["rollouts"]:
            click.echo(f"  {_rollout_line(rollout)}")
    if info.get("finished_at"):
        click.echo(f"Finished At: {info['finished_at']}")
        click.echo(f"Finished By: {info['finished_by']}")
    if show_targets:
        click.echo(json.dumps(info["targets"], indent=2, sort_keys=True))


# -- signing requests -------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def requests() -> None:
    """Signing requests: list, show, export to the appliance, import its signatures."""


@requests.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def requests_list(ctx: click.Context, as_json: bool) -> None:
    """List signing requests."""
    rows = client_for(ctx).get("/requests")
    if as_json:
        _echo_json(rows)
        return
    _table(
        rows,
        [("ID", "id"), ("PURPOSE", "purpose"), ("WAVE", "wave"), ("STATUS", "status"),
         ("CREATED AT", "created_at")],
    )  # fmt: skip


@requests.command("show")
@click.argument("request_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def requests_show(ctx: click.Context, request_id: str, as_json: bool) -> None:
    """Show a signing request: purpose, payloads and their digests."""
    info = client_for(ctx).get(f"/requests/{request_id}")
    if as_json:
        _echo_json(info)
        return
    click.echo(f"Request: {info['id']} ({info['status']})")
    click.echo(f"Purpose: {info['description']}")
    click.echo(f"Digest: {info['request_sha256']}")
    click.echo(f"Operator signed: {'yes' if info['operator_signed'] else 'no'}")
    for payload in info["payloads"]:
        click.echo(
            f"  {payload['name']}: {payload['role']} v{payload['version']}, "
            f"{payload['targets']} targets, expires {payload['expires']}, "
            f"sha256 {payload['sha256']}"
        )


def _operator_sign(client: ApiClient, request_id: str) -> None:
    """Sign the request digest bytes with the operator's GnuPG key, if one is configured."""
    fingerprint = os.environ.get("WAVESIGN_OPERATOR_GPG_KEY")
    if not fingerprint:
        return
    from wavesign.shared.bundles import SigningRequest
    from wavesign.shared.gpg import GnuPG

    request = SigningRequest.from_bytes(
        client.request("GET", f"/requests/{request_id}/bundle", params={"full": True}, raw=True)
    )
    if request.operator_signature is not None:
        return
    signature = GnuPG().sign_detached(fingerprint, request.signing_bytes())
    client.post(f"/requests/{request_id}/operator-signature", {"signature": signature})


@requests.command("export")
@click.argument("request_id", metavar="ID")
@click.option("--out", default=None, help="Write the request file here (USB).")
@click.option("--qr-png", default=None, help="Write QR frames (PNG) and a contact sheet here.")
@click.option("--qr-html", default=None, help="Write a self-contained QR slideshow here.")
@click.option("--qr-terminal", is_flag=True, help="Print QR frames to the terminal.")
@click.option("--full", is_flag=True, help="Full payloads, no deltas.")
@click.option("--density", type=click.Choice(["low", "normal", "high"]), default="normal")
@click.pass_context
def requests_export(
    ctx: click.Context,
    request_id: str,
    out: str | None,
    qr_png: str | None,
    qr_html: str | None,
    qr_terminal: bool,
    full: bool,
    density: str,
) -> None:
    """Export a signing request for the offline appliance (file or QR frames).

    With WAVESIGN_OPERATOR_GPG_KEY set, the request is first signed with that GnuPG key.

    \b
    Example:
      wavesign requests export req-1a2b3c --out /media/usb/wave.request.json
      wavesign requests export req-1a2b3c --qr-html wave.html
    """
    if not (out or qr_png or qr_html or qr_terminal):
        raise click.UsageError("choose --out FILE, --qr-png DIR, --qr-html FILE or --qr-terminal")
    client = client_for(ctx)
    _operator_sign(client, request_id)
    # POST, not GET: the broker logs what crossed the air gap (``request-exported``).
    data = client.request(
        "POST", f"/requests/{request_id}/export", params={"full": full or None}, raw=True
    )
    if out:
        atomic_write(out, data + b"\n", mode=0o644)
        click.echo(f"request {request_id} written to {out}")
    if qr_png or qr_html or qr_terminal:
        try:
            from wavesign.shared.qrtransport import export_qr
        except ImportError:
            raise CLIError("the QR transport is not installed in this build") from None
        frames = export_qr(
            data,
            png_dir=qr_png,
            html=qr_html,
            terminal=qr_terminal,
            density=density,
            title=f"wavesign request {request_id}",
        )
        click.echo(f"request {request_id}: {len(frames)} QR frames", err=qr_terminal)


@requests.command("import")
@click.argument("file", required=False)
@click.option("--qr-images", multiple=True, help="QR frame images (repeatable).")
@click.option("--qr-stdin", is_flag=True, help="Read scanned QR frames as lines on stdin.")
@click.pass_context
def requests_import(
    ctx: click.Context, file: str | None, qr_images: tuple[str, ...], qr_stdin: bool
) -> None:
    """Import the appliance's response: a wave becomes active at threshold, a root is
    put in place, a renewal is published. The same response twice changes nothing.

    \b
    Example:
      wavesign requests import /media/usb/wave-v2.0-update.response.json
      zbarcam --raw | wavesign requests import --qr-stdin
    """
    sources = sum(1 for s in (file, qr_images, qr_stdin) if s)
    if sources != 1:
        raise click.UsageError("give exactly one of FILE, --qr-images IMG... or --qr-stdin")
    if file:
        from wavesign.shared.transport import read_bundle_file

        data = read_bundle_file(file)
    else:
        try:
            from wavesign.shared.qrtransport import (
                read_qr_images,
                read_qr_lines,
            )
        except ImportError:
            raise CLIError("the QR transport is not installed in this build") from None
        data = read_qr_images(list(qr_images)) if qr_images else read_qr_lines(sys.stdin)
    result = client_for(ctx).request("POST", "/responses", content=data.strip())
    if result.get("noop"):
        click.echo(result["message"])
        return
    click.echo(f"signatures imported for request {result['request_id']}")
    click.echo(result["message"])


# -- root ceremony ----------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def root() -> None:
    """The TUF root: propose it to the offline appliance (ceremony or rotation), show it."""


@root.command("propose")
@click.option(
    "--root-threshold", type=click.IntRange(1, 16), default=1, show_default=True,
    help="Root signatures needed (the appliance must hold that many root keys).",
)  # fmt: skip
@click.option("--expires-days", type=click.IntRange(1, 3650), default=365, show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"request_id", ...}.')
@click.pass_context
def root_propose(ctx: click.Context, root_threshold: int, expires_days: int, as_json: bool) -> None:
    """Propose the next root: this broker's online keys and the policy.

    The appliance adds its root and offline targets keys, signs the root, and returns
    it; `requests import` of that response checks it and puts it in place.

    \b
    Example:
      wavesign root propose --root-threshold 1 --expires-days 365
      wavesign requests export <ID> --out /media/usb/root.request.json
      wavesign-offline sign /media/usb/root.request.json --confirm root-v1 --out resp.json
      wavesign requests import resp.json
    """
    result = client_for(ctx).post(
        "/roots/propose", {"root_threshold": root_threshold, "expires_days": expires_days}
    )
    if as_json:
        _echo_json(result)
        return
    click.echo(
        f"root v{result['version']} proposed (root threshold {result['root_threshold']}, "
        f"expires {result['expires']})"
    )
    click.echo(f"request: {result['request_id']}")
    click.echo(
        f"next: wavesign requests export {result['request_id']} --out FILE (or --qr-png DIR)"
    )


@root.command("show")
@click.option("--version", "version", type=click.IntRange(1), default=None, help="Root vN.")
@click.option("--json", "as_json", is_flag=True, help="Print the signed root metadata.")
@click.pass_context
def root_show(ctx: click.Context, version: int | None, as_json: bool) -> None:
    """Show the current root (or root vN): roles, keys, thresholds, expiry.

    \b
    Example:
      wavesign root show
      wavesign root show --version 1 --json > 1.root.json
    """
    path = "/roots/current" if version is None else f"/roots/{version}"
    document = client_for(ctx).get(path)
    if as_json:
        _echo_json(document)
        return
    signed = document["signed"]
    click.echo(f"Root version: {signed['version']}")
    click.echo(f"Expires: {signed['expires']}")
    click.echo(f"Signatures: {len(document.get('signatures', []))}")
    for name in ("root", "targets", "snapshot", "timestamp"):
        role = signed["roles"][name]
        click.echo(f"{name}: threshold {role['threshold']}")
        for keyid in role["keyids"]:
            key = signed["keys"].get(keyid, {})
            click.echo(f"  {keyid}  {key.get('keytype', '?')}/{key.get('scheme', '?')}")


# -- production -------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def production() -> None:
    """A tag's production targets: renew them before they expire."""


@production.command("renew")
@click.argument("tag")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=365, show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"request_id", ...}.')
@click.pass_context
def production_renew(ctx: click.Context, tag: str, expires_days: int, as_json: bool) -> None:
    """Request a renewal: the same production targets, a higher version, a new expiry.

    Signing it needs the offline key (confirmation text `renew-TAG`); `requests import`
    of the response publishes the renewed targets as the tag's production targets.

    \b
    Example:
      wavesign production renew production --expires-days 365
    """
    result = client_for(ctx).post(f"/production/{tag}/renew", {"expires_days": expires_days})
    for warning in result.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"renewal of tag {tag}: targets v{result['version']}, expires {result['expires']}")
    click.echo(f"request: {result['request_id']}")


cli.add_command(status)
cli.add_command(demo)
cli.add_command(evidence)
cli.add_command(fleet)
wave.add_command(wave_status)

main = main_for(cli)
