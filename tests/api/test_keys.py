"""API keys and roles: permissions, create/authenticate/revoke/list, hashing, `keys` commands."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from linetwin.api.audit import AuditLog
from linetwin.api.errors import UsageError
from linetwin.api.keys import (
    KEY_ID_LENGTH,
    KEY_LENGTH,
    PERMISSIONS,
    KeyStore,
    Permission,
    Role,
    allows,
    hash_key,
)
from linetwin.api.storage import (
    DB_FILENAME,
    ConflictError,
    NotFoundError,
    Storage,
    StorageValueError,
)

P = Permission
EXPECTED = {
    Role.VIEWER: {P.READ},
    Role.CONTROLLER: {P.READ, P.ACKNOWLEDGE},
    Role.GATEWAY: {P.READ, P.ACKNOWLEDGE, P.PLANT_DATA},
    Role.ENGINEER: {P.READ, P.MODE, P.APPROVE, P.OVERRIDE, P.ROLLBACK, P.OBJECTIVE, P.WHAT_IF},
    Role.ADMIN: {
        *(P.READ, P.MODE, P.APPROVE, P.OVERRIDE, P.ROLLBACK, P.OBJECTIVE, P.WHAT_IF, P.KEYS),
        P.PLANT_DATA,
    },
}


@pytest.fixture
def keys(tmp_path: Path) -> Any:
    with Storage(tmp_path / DB_FILENAME) as storage:
        yield KeyStore(storage)


@pytest.mark.parametrize("role", list(Role))
def test_roles_allow_exactly_their_permissions(role: Role) -> None:
    assert PERMISSIONS[role] == EXPECTED[role]
    for permission in Permission:
        assert allows(role, permission) is (permission in EXPECTED[role])
        assert allows(str(role), str(permission)) is (permission in EXPECTED[role])


def test_roles_compare_by_what_they_allow() -> None:
    assert allows(Role.ADMIN, Role.ENGINEER) and allows(Role.ENGINEER, Role.VIEWER)
    assert allows("controller", "viewer") and allows(Role.VIEWER, Role.VIEWER)
    # Not a ladder: acknowledging is the control system's alone.
    assert not allows(Role.ADMIN, Role.CONTROLLER) and not allows(Role.ENGINEER, "controller")
    assert not allows(Role.ENGINEER, Role.ADMIN) and not allows(Role.VIEWER, Role.CONTROLLER)
    with pytest.raises(UsageError, match=r"unknown role 'root' \(roles: viewer, controller"):
        allows("root", P.READ)
    with pytest.raises(UsageError, match="unknown role 'fly'"):
        allows(Role.ADMIN, "fly")


def test_create_and_authenticate(keys: KeyStore) -> None:
    new = keys.create(Role.CONTROLLER, "plc line 1", actor="cli:test")
    assert new.key.startswith("lt_") and len(new.key) == KEY_LENGTH == 46
    assert new.info.key_id == new.key[:KEY_ID_LENGTH]
    assert (new.info.role, new.info.label, new.info.active) == (Role.CONTROLLER, "plc line 1", True)
    assert new.key not in repr(new)
    assert keys.authenticate(new.key) == (new.info.key_id, Role.CONTROLLER)
    other = keys.create("admin", actor="cli:test")
    assert other.key != new.key and keys.authenticate(other.key) == (other.info.key_id, Role.ADMIN)
    assert [k.key_id for k in keys.list()] == [new.info.key_id, other.info.key_id]
    assert keys.get(new.info.key_id) == new.info and keys.get("lt_nothing") is None


def test_wrong_and_malformed_keys_are_refused(keys: KeyStore) -> None:
    key = keys.create(Role.ENGINEER, actor="t").key
    last = "A" if key[-1] != "A" else "B"
    for wrong in (
        key[:-1] + last,  # right id, wrong secret
        key[:KEY_ID_LENGTH] + "x" * (KEY_LENGTH - KEY_ID_LENGTH),
        "lt_" + "y" * 43,  # unknown id
        key[:-1],
        key + "x",
        "Bearer " + key,
        "",
        key.upper(),
        None,
    ):
        assert keys.authenticate(wrong) is None, wrong  # type: ignore[arg-type]


def test_revoked_keys_are_refused(keys: KeyStore) -> None:
    new = keys.create(Role.ENGINEER, "laptop", actor="alice")
    keep = keys.create(Role.VIEWER, actor="alice")
    info = keys.revoke(new.info.key_id, actor="bob", reason="lost laptop")
    assert info.revoked_at is not None and not info.active
    assert keys.authenticate(new.key) is None
    assert keys.authenticate(keep.key) is not None
    listed = {k.key_id: k for k in keys.list()}
    assert not listed[new.info.key_id].active and listed[keep.info.key_id].active
    with pytest.raises(ConflictError, match="already revoked"):
        keys.revoke(new.info.key_id, actor="bob")
    with pytest.raises(NotFoundError, match="no api key 'lt_missing'"):
        keys.revoke("lt_missing", actor="bob")


def test_bad_roles_and_labels(keys: KeyStore) -> None:
    with pytest.raises(UsageError, match="unknown role 'god'"):
        keys.create("god", actor="t")
    with pytest.raises(StorageValueError, match="label"):
        keys.create(Role.VIEWER, "two\nlines", actor="t")
    assert keys.list() == []


def test_key_changes_are_audited(keys: KeyStore) -> None:
    new = keys.create(Role.ADMIN, "first", actor="cli:root", reason="bootstrap")
    keys.revoke(new.info.key_id, actor="cli:root", reason="rotated")
    records = AuditLog(keys.storage).page()
    assert [(r.actor, r.action, r.reason) for r in records] == [
        ("cli:root", "key.create", "bootstrap"),
        ("cli:root", "key.revoke", "rotated"),
    ]
    assert records[0].new == {"key_id": new.info.key_id, "role": "admin", "label": "first"}
    assert records[1].old["active"] is True and records[1].new["active"] is False
    assert AuditLog(keys.storage).verify() == (True, None, 2)


def test_plaintext_keys_are_never_stored(keys: KeyStore) -> None:
    new = [keys.create(role, f"k{i}", actor="t") for i, role in enumerate(Role)]
    keys.revoke(new[0].info.key_id, actor="t")
    path = keys.storage.path
    files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    stored = b"".join(p.read_bytes() for p in files)
    for k in new:
        assert hash_key(k.key).encode() in stored  # the scan does see what is stored
        assert k.key.encode() not in stored
        assert k.key[KEY_ID_LENGTH:].encode() not in stored  # nor its secret part
    keys.storage.close()
    stored = path.read_bytes()  # checkpointed into the main file on close
    assert hash_key(new[1].key).encode() in stored
    assert not any(k.key[KEY_ID_LENGTH:].encode() in stored for k in new)


def test_cli_keys_create_list_revoke(cli: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    res = cli(
        "keys", "create", "--role", "admin", "--label", "ops", "--data-dir", data_dir, "--json"
    )
    assert res.code == 0, res.err
    created = json.loads(res.out)
    assert created["role"] == "admin" and created["key"].startswith("lt_")
    assert (data_dir / DB_FILENAME).is_file()
    res = cli("keys", "create", "--role", "viewer", "--data-dir", data_dir)
    assert res.code == 0, res.err
    viewer_key = res.out.strip()
    assert len(viewer_key) == KEY_LENGTH and "shown" in res.err and viewer_key not in res.err
    with Storage(data_dir / DB_FILENAME) as storage:
        store = KeyStore(storage)
        assert store.authenticate(created["key"]) == (created["key_id"], Role.ADMIN)
        assert store.authenticate(viewer_key) == (viewer_key[:KEY_ID_LENGTH], Role.VIEWER)
        assert AuditLog(storage).page()[0].actor.startswith("cli")

    res = cli("keys", "list", "--data-dir", data_dir, "--json")
    assert res.code == 0, res.err
    listed = json.loads(res.out)
    assert [(k["key_id"], k["role"], k["active"]) for k in listed] == [
        (created["key_id"], "admin", True),
        (viewer_key[:KEY_ID_LENGTH], "viewer", True),
    ]
    assert created["key"] not in res.out
    res = cli("keys", "revoke", created["key_id"], "--data-dir", data_dir, "--reason", "test")
    assert res.code == 0 and f"revoked {created['key_id']}" in res.out
    res = cli("keys", "list", "--data-dir", data_dir)
    assert res.code == 0
    lines = res.out.splitlines()
    assert lines[0].startswith("KEY ID") and len(lines) == 3
    stamp = re.compile(r"\d\d:\d\d:\d\dZ")
    assert created["key_id"] in lines[1] and lines[1].endswith(" ops")
    assert len(stamp.findall(lines[1])) == 2  # created, revoked
    assert viewer_key[:KEY_ID_LENGTH] in lines[2] and len(stamp.findall(lines[2])) == 1


def test_cli_keys_errors(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    res = cli("keys", "list", "--data-dir", data_dir)
    assert res.code == 2 and res.err.count("\n") == 1 and "no database here" in res.err
    assert cli("keys", "create", "--role", "viewer", "--data-dir", data_dir).code == 0
    res = cli("keys", "revoke", "lt_nothere", "--data-dir", data_dir)
    assert res.code == 2 and res.err.startswith("linetwin: error: ") and "lt_nothere" in res.err
    assert res.err.count("\n") == 1
    res = cli("keys", "create", "--role", "root", "--data-dir", data_dir)
    assert res.code == 2 and "root" in res.err
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = cli("keys", "create", "--role", "viewer", "--data-dir", blocker / "sub")
    assert res.code == 2 and str(blocker) in res.err and res.err.count("\n") == 1


def test_cli_data_dir_from_the_environment(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINETWIN_DATA_DIR", str(tmp_path / "env"))
    res = cli("keys", "create", "--role", "engineer", "--json")
    assert res.code == 0, res.err
    assert (tmp_path / "env" / DB_FILENAME).is_file()
    res = cli("keys", "list", "--json")
    assert [k["role"] for k in json.loads(res.out)] == ["engineer"]
