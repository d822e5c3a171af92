"""`linetwin keys create|list|revoke` and `linetwin audit verify`: the service's admin commands.

They work on the database in the data directory (`--data-dir`, default `$LINETWIN_DATA_DIR`
or `~/.local/share/linetwin`), also while `linetwin serve` runs on it.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from linetwin.api.audit import AuditLog
from linetwin.api.errors import UsageError
from linetwin.api.keys import KeyStore, Role
from linetwin.api.storage import Storage, database_path

data_dir_option = click.option(
    "--data-dir",
    "data_dir",
    metavar="DIR",
    default=None,
    help="Data directory [default: $LINETWIN_DATA_DIR or ~/.local/share/linetwin].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def open_storage(data_dir: str | None, *, create: bool = False) -> Storage:
    """Open the data directory's database; only `create` makes a missing one."""
    path = database_path(data_dir)
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{path.parent}: cannot create the data directory: {exc.strerror or exc}"
            ) from None
    elif not path.is_file():
        raise UsageError(
            f"{path}: no database here (`linetwin keys create` or `linetwin serve` makes one; "
            "check --data-dir)"
        )
    return Storage(path, create=create)


def cli_actor() -> str:
    """Who the audit log records for a command-line change: `cli:USER`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid
        return "cli"


def _time(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys."""


@keys_group.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--label", default="", help="What the key is for (shown by `keys list`).")
@data_dir_option
@json_option
def keys_create(role: str, label: str, data_dir: str | None, as_json: bool) -> None:
    """Create a key and print it, this once (only its hash is stored)."""
    with open_storage(data_dir, create=True) as storage:
        new = KeyStore(storage).create(role, label, actor=cli_actor())
    info = new.info
    if as_json:
        out = {"key": new.key, "role": str(info.role), "key_id": info.key_id, "label": label}
        click.echo(json.dumps(out))
        return
    click.echo(new.key)
    click.echo(
        f"warning: this is the only time key {info.key_id} ({info.role}) is shown: store it now",
        err=True,
    )


@keys_group.command("list")
@data_dir_option
@json_option
def keys_list(data_dir: str | None, as_json: bool) -> None:
    """List keys (ids, roles, labels, times; never the keys themselves)."""
    with open_storage(data_dir) as storage:
        keys = KeyStore(storage).list()
    if as_json:
        click.echo(json.dumps([k.as_dict() for k in keys]))
        return
    if not keys:
        click.echo("no keys")
        return
    click.echo(f"{'KEY ID':12s} {'ROLE':10s} {'CREATED':20s} {'REVOKED':20s} LABEL")
    for k in keys:
        line = f"{k.key_id:12s} {k.role:10s} {_time(k.created_at):20s} {_time(k.revoked_at):20s}"
        click.echo(f"{line} {k.label}".rstrip())


@keys_group.command("revoke")
@click.argument("key_id")
@click.option("--reason", default="", help="Why (recorded in the audit log).")
@data_dir_option
def keys_revoke(key_id: str, reason: str, data_dir: str | None) -> None:
    """Revoke key KEY_ID (an id from `keys list`): it stops working at once."""
    with open_storage(data_dir) as storage:
        info = KeyStore(storage).revoke(key_id, actor=cli_actor(), reason=reason)
    click.echo(f"revoked {info.key_id} ({info.role})")


@click.group("audit")
def audit_group() -> None:
    """Check the audit log."""


@audit_group.command("verify")
@data_dir_option
@json_option
def audit_verify(data_dir: str | None, as_json: bool) -> None:
    """Verify the audit log's hash chain; exit 1 and name the first bad record if broken."""
    with open_storage(data_dir) as storage:
        check = AuditLog(storage).check()
        path = Path(storage.path)
    if as_json:
        out = {
            "ok": check.ok,
            "bad_seq": check.bad_seq,
            "records": check.records,
            "problem": check.problem,
            "head_hash": check.head_hash,
            "database": str(path),
        }
        click.echo(json.dumps(out))
    elif check.ok:
        click.echo(f"audit log verified: {check.records} records, head {check.head_hash}")
    else:
        click.echo(
            f"audit log BROKEN at seq {check.bad_seq}: {check.problem} "
            f"({check.records} records in {path})"
        )
    if not check.ok:
        sys.exit(1)
