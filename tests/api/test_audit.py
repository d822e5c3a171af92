"""The hash-chained audit log: appends, pages, triggers, tamper detection, `audit verify`.

Tampering is done as someone with write access to the file would: through a raw sqlite3
connection, after dropping the triggers that refuse UPDATE and DELETE.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from linetwin.api.audit import AuditLog, record_hash
from linetwin.api.storage import DB_FILENAME, GENESIS_HASH, Storage, StorageValueError

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
N = 6


@pytest.fixture
def log(tmp_path: Path) -> Any:
    with Storage(tmp_path / DB_FILENAME) as storage:
        audit = AuditLog(storage)
        for i in range(N):
            audit.append("alice", "mode.set", old={"mode": i}, new={"mode": i + 1}, reason="r")
        yield audit


def tamper(path: Path, *statements: str, params: tuple[Any, ...] = ()) -> None:
    """Run `statements` on the file with the append-only triggers dropped."""
    con = sqlite3.connect(path, isolation_level=None)
    for trigger in ("audit_no_update", "audit_no_delete", "audit_extends_head"):
        con.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for statement in statements:
        con.execute(statement, params if "?" in statement else ())
    con.close()


def test_append_page_and_verify(log: AuditLog) -> None:
    records = log.page(after_seq=0, limit=4) + log.page(after_seq=4, limit=4)
    assert [r.seq for r in records] == list(range(1, N + 1))
    assert records[0].prev_hash == GENESIS_HASH
    for prev, r in itertools.pairwise(records):
        assert r.prev_hash == prev.hash
    r = records[2]
    assert (r.actor, r.action, r.old, r.new, r.reason) == (
        "alice",
        "mode.set",
        {"mode": 2},
        {"mode": 3},
        "r",
    )
    assert r.hash == record_hash(
        r.seq, r.at, r.actor, r.action, r.old_json, r.new_json, r.reason, r.prev_hash
    )
    assert r.as_dict()["new"] == {"mode": 3}
    assert log.head() == (N, records[-1].hash)
    assert log.verify() == (True, None, N)
    ok, bad, count = log.verify()
    assert (ok, bad, count) == (True, None, N)


def test_empty_log_verifies(tmp_path: Path) -> None:
    with Storage(tmp_path / DB_FILENAME) as storage:
        assert AuditLog(storage).verify() == (True, None, 0)


def test_append_checks_its_input(log: AuditLog) -> None:
    with pytest.raises(StorageValueError, match="actor"):
        log.append("", "x")
    with pytest.raises(StorageValueError, match="not JSON"):
        log.append("a", "x", new=object())
    assert log.verify() == (True, None, N)


def test_append_joins_the_callers_transaction(log: AuditLog) -> None:
    with pytest.raises(RuntimeError), log.storage.write():
        log.append("bob", "objective.set", new={"w": 1})
        raise RuntimeError("the change it records failed")
    assert log.head()[0] == N and log.verify() == (True, None, N)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit SET reason = 'nothing to see' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 2",
        "DELETE FROM audit",
        "INSERT OR REPLACE INTO audit SELECT * FROM audit WHERE seq = 2",
        "INSERT INTO audit VALUES (99, 0, 'a', 'b', 'null', 'null', '', 'x', 'y')",
        "UPDATE audit_head SET seq = 2",
        "DELETE FROM audit_head",
    ],
)
def test_triggers_refuse_changes(log: AuditLog, statement: str) -> None:
    con = sqlite3.connect(log.storage.path, isolation_level=None)
    con.execute("PRAGMA recursive_triggers=ON")
    with pytest.raises(sqlite3.IntegrityError, match="audit"):
        con.execute(statement)
    con.close()
    assert log.verify() == (True, None, N)


def test_detects_an_edited_record(log: AuditLog) -> None:
    tamper(log.storage.path, "UPDATE audit SET new = '{\"mode\":99}' WHERE seq = 3")
    assert log.verify() == (False, 3, N)
    assert "altered" in str(log.check().problem)


def test_detects_an_edited_time(log: AuditLog) -> None:
    tamper(log.storage.path, "UPDATE audit SET at = at + 1 WHERE seq = 5")
    assert log.verify() == (False, 5, N)


@pytest.mark.parametrize(("seq", "bad"), [(3, 4), (N, N)])
def test_detects_an_edited_record_with_its_hash_recomputed(
    log: AuditLog, seq: int, bad: int
) -> None:
    """The next record's link breaks; for the last record, the head does not match."""
    r = log.page(after_seq=seq - 1, limit=1)[0]
    forged = record_hash(
        r.seq, r.at, "mallory", r.action, r.old_json, r.new_json, r.reason, r.prev_hash
    )
    tamper(
        log.storage.path,
        "UPDATE audit SET actor = 'mallory', hash = ? WHERE seq = ?",
        params=(forged, seq),
    )
    assert log.verify() == (False, bad, N)


def test_detects_a_deleted_record(log: AuditLog) -> None:
    tamper(log.storage.path, "DELETE FROM audit WHERE seq = 4")
    assert log.verify() == (False, 4, N - 1)
    assert "missing" in str(log.check().problem)


def test_detects_a_deleted_tail(log: AuditLog) -> None:
    tamper(log.storage.path, f"DELETE FROM audit WHERE seq >= {N - 1}")
    assert log.verify() == (False, N - 1, N - 2)


def test_a_deleted_tail_stays_detected_after_new_appends(log: AuditLog) -> None:
    tamper(log.storage.path, f"DELETE FROM audit WHERE seq = {N}")
    log.append("alice", "mode.set")  # extends the head, not the truncated table
    assert log.verify() == (False, N, N)


def test_detects_reordered_records(log: AuditLog) -> None:
    tamper(
        log.storage.path,
        "UPDATE audit SET seq = -1 WHERE seq = 2",
        "UPDATE audit SET seq = 2 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = -1",
    )
    assert [r.actor for r in log.page()] == ["alice"] * N
    assert log.verify() == (False, 2, N)


def test_concurrent_threads_extend_one_chain(tmp_path: Path) -> None:
    with Storage(tmp_path / DB_FILENAME) as storage, Storage(storage.path) as other:
        errors: list[BaseException] = []

        def writer(t: int) -> None:
            audit = AuditLog(storage if t % 2 else other)
            try:
                for i in range(20):
                    audit.append(f"t{t}", "x", new=i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert AuditLog(storage).verify() == (True, None, 120)


def test_concurrent_processes_extend_one_chain(tmp_path: Path) -> None:
    db = tmp_path / DB_FILENAME
    Storage(db).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "durability_writer.py"),
                str(db),
                str(run),
                "--audit-only",
                "--count",
                "60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for run in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    seqs = sorted(int(line.split()[1]) for out, _ in outs for line in out.splitlines())
    assert seqs == list(range(1, 181))
    with Storage(db) as storage:
        assert AuditLog(storage).verify() == (True, None, 180)


def test_cli_audit_verify(cli: Any, log: AuditLog) -> None:
    data_dir = log.storage.path.parent
    res = cli("audit", "verify", "--data-dir", data_dir, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert (out["ok"], out["bad_seq"], out["records"]) == (True, None, N)
    assert out["head_hash"] == log.head()[1]
    res = cli("audit", "verify", "--data-dir", data_dir)
    assert res.code == 0 and f"verified: {N} records" in res.out
    tamper(log.storage.path, "UPDATE audit SET reason = 'x' WHERE seq = 2")
    res = cli("audit", "verify", "--data-dir", data_dir, "--json")
    assert res.code == 1
    assert json.loads(res.out)["bad_seq"] == 2
    res = cli("audit", "verify", "--data-dir", data_dir)
    assert res.code == 1 and "BROKEN at seq 2" in res.out


def test_cli_audit_verify_without_a_database(cli: Any, tmp_path: Path) -> None:
    res = cli("audit", "verify", "--data-dir", tmp_path / "nothing")
    assert res.code == 2 and res.out == ""
    assert res.err.count("\n") == 1 and "no database here" in res.err
    assert not (tmp_path / "nothing").exists()
