"""The service's SQLite storage: settings, schema, decisions, acknowledgements, errors."""

from __future__ import annotations

import itertools
import math
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from linetwin.api.storage import (
    DB_FILENAME,
    SCHEMA_VERSION,
    ConflictError,
    DecisionRecord,
    NotFoundError,
    Storage,
    StorageError,
    StorageValueError,
    database_path,
    default_data_dir,
)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def payload(ident: str, **extra: Any) -> dict[str, Any]:
    """A decision payload with the fields storage needs."""
    return {
        "id": ident,
        "version": 0,
        "created_at": 1_700_000_000.5,
        "line_time_s": 12.5,
        "mode": "closed",
        "setpoints": {"s1": {"speed": 1.0}},
        **extra,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Any:
    with Storage(tmp_path / DB_FILENAME, clock=clock) as s:
        yield s


def raw(path: Path) -> sqlite3.Connection:
    """An independent connection, as another process would have."""
    return sqlite3.connect(path, isolation_level=None)


def test_connection_settings_are_durable(store: Storage) -> None:
    with store.read() as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert con.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_database_file_is_private(store: Storage) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_schema_is_migrated_once_and_newer_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    Storage(path).close()
    with Storage(path) as again:
        assert again.schema_version() == SCHEMA_VERSION
    con = raw(path)
    assert con.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION
    con.execute("INSERT INTO schema_migrations VALUES (?, 0, 'from the future')", (99,))
    con.close()
    with pytest.raises(StorageError, match=r"schema version 99 is newer") as info:
        Storage(path)
    assert str(path) in str(info.value)


def test_publish_and_read_back(store: Storage, tmp_path: Path) -> None:
    assert store.latest_record() is None and store.next_version() == 1
    first = store.publish_json(payload("a", gap=math.nan))
    assert first.version == 1 and store.next_version() == 2
    second = store.publish_json(payload("b", mode="advisory"))
    assert (second.version, second.id, second.mode) == (2, "b", "advisory")
    assert first.payload["version"] == 1  # the assigned version, not the payload's 0
    assert first.payload["gap"] is None  # strict JSON: NaN is stored as null
    assert first.created_at == 1_700_000_000.5 and first.line_time_s == 12.5
    assert store.decision(1) == first and store.decision(3) is None
    assert store.latest_record() == second
    # Committed on return: another connection sees it.
    con = raw(tmp_path / DB_FILENAME)
    assert con.execute("SELECT id FROM decisions ORDER BY version").fetchall() == [("a",), ("b",)]
    con.close()


def test_history_pages(store: Storage) -> None:
    for i in range(7):
        store.publish_json(payload(f"d{i}"))
    page1 = store.decisions(after_version=0, limit=3)
    page2 = store.decisions(after_version=page1[-1].version, limit=3)
    page3 = store.decisions(after_version=page2[-1].version, limit=3)
    assert [r.version for r in page1 + page2 + page3] == list(range(1, 8))
    assert store.decisions(after_version=7) == []
    for bad in (0, 1001, 2.5):
        with pytest.raises(StorageValueError, match="limit"):
            store.decisions(limit=bad)  # type: ignore[arg-type]


def test_duplicate_ids_and_bad_payloads_store_nothing(store: Storage) -> None:
    store.publish_json(payload("same"))
    with pytest.raises(ConflictError, match="'same' is already published"):
        store.publish_json(payload("same"))
    for bad, message in (
        ({"id": "x", "created_at": 1.0, "line_time_s": 1.0}, "missing 'mode'"),
        (payload(""), "id must be"),
        (payload("x", created_at=math.inf), "created_at must be a finite number"),
        (payload("x", line_time_s="soon"), "line_time_s must be"),
        (payload("x", extra=object()), "not JSON data"),
    ):
        with pytest.raises(StorageValueError, match=message):
            store.publish_json(bad)
    assert store.next_version() == 2 and [r.id for r in store.decisions()] == ["same"]


def test_versions_are_unique_and_increasing_under_concurrent_publishers(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    shared = Storage(path)
    others = [Storage(path), Storage(path)]  # separate connections, as other processes
    n_threads, per_thread = 8, 30
    got: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def publisher(t: int) -> None:
        store = shared if t < 6 else others[t - 6]
        try:
            barrier.wait()
            got[t] = [store.publish_json(payload(f"t{t}-{i}")).version for i in range(per_thread)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    every = sorted(v for versions in got.values() for v in versions)
    assert every == list(range(1, n_threads * per_thread + 1))  # unique, no gaps
    for versions in got.values():
        assert all(a < b for a, b in itertools.pairwise(versions))
    for record in shared.decisions(limit=1000):
        assert record.payload["version"] == record.version
        t, i = record.id[1:].split("-")
        assert got[int(t)][int(i)] == record.version  # each publisher got its own row's version
    assert shared.next_version() == n_threads * per_thread + 1
    for s in (shared, *others):
        s.close()


def test_reads_work_from_other_threads(store: Storage) -> None:
    store.publish_json(payload("a"))
    seen: list[Any] = []
    th = threading.Thread(target=lambda: seen.append(store.latest_record()))
    th.start()
    th.join()
    assert seen and seen[0] is not None and seen[0].id == "a"


def test_acknowledgements_latest_per_client(store: Storage, clock: Clock) -> None:
    for i in range(3):
        store.publish_json(payload(f"d{i}"))
    first = store.record_ack("plc-a", 1, {"s1": {"speed": 1.0}})
    assert (first.client, first.version, first.age_s) == ("plc-a", 1, 0.0)
    assert first.values == {"s1": {"speed": 1.0}}
    clock.now += 10
    store.record_ack("plc-b", 2, {"s1": {"speed": 2.0}})
    clock.now += 5
    store.record_ack("plc-a", 3, {"s1": {"speed": 3.0}})
    clock.now += 1
    acks = store.acks()
    assert [(a.client, a.version) for a in acks] == [("plc-a", 3), ("plc-b", 2)]
    assert [a.age_s for a in acks] == [1.0, 6.0]
    assert acks[0].values == {"s1": {"speed": 3.0}}


def test_acknowledging_an_unknown_version_stores_nothing(store: Storage) -> None:
    store.publish_json(payload("d"))
    with pytest.raises(NotFoundError, match="no decision version 5"):
        store.record_ack("plc-a", 5, {})
    with pytest.raises(StorageValueError, match="client"):
        store.record_ack("", 1, {})
    with pytest.raises(StorageValueError, match="version"):
        store.record_ack("plc-a", "1", {})  # type: ignore[arg-type]
    with pytest.raises(StorageValueError, match="not JSON"):
        store.record_ack("plc-a", 1, {"x": {1, 2}})
    assert store.acks() == []


def test_errors_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="not a database") as info:
        Storage(junk)
    assert str(junk) in str(info.value)
    missing_dir = tmp_path / "nope" / DB_FILENAME
    with pytest.raises(StorageError) as info:
        Storage(missing_dir)
    assert str(missing_dir) in str(info.value)
    with pytest.raises(NotFoundError, match="no database here"):
        Storage(tmp_path / "absent.sqlite3", create=False)
    assert not (tmp_path / "absent.sqlite3").exists()


def test_closed_storage_refuses(tmp_path: Path) -> None:
    s = Storage(tmp_path / DB_FILENAME)
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.latest_record()


def test_failed_write_block_rolls_back(store: Storage) -> None:
    with pytest.raises(RuntimeError), store.write() as con:
        con.execute(
            "INSERT INTO decisions (version, id, created_at, line_time_s, mode, payload) "
            "VALUES (1, 'x', 0, 0, 'closed', '{}')"
        )
        raise RuntimeError("boom")
    assert store.latest_record() is None


def test_data_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LINETWIN_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert database_path() == tmp_path / DB_FILENAME
    monkeypatch.delenv("LINETWIN_DATA_DIR")
    assert default_data_dir() == Path.home() / ".local/share/linetwin"
    assert database_path("x") == Path("x") / DB_FILENAME


def test_decisions_round_trip_through_the_store_protocol(tmp_path: Path) -> None:
    from linetwin.optimizer.decision import Decision, Mode, encode
    from linetwin.optimizer.store import DecisionStore
    from linetwin.twin import bundled_spec

    spec = bundled_spec("example")
    n = spec.n_stations
    thermal = np.array([s.is_thermal for s in spec.stations])
    setpoints = np.column_stack([np.linspace(0.8, 1.1, n), np.where(thermal, 180.0, 0.0)])
    store = Storage(tmp_path / DB_FILENAME, spec)
    protocol: DecisionStore[DecisionRecord] = store  # the controller's interface
    assert protocol.latest() is None
    decision = Decision(
        id="abc",
        version=0,  # the store assigns it
        line_time_s=60.0,
        created_at=1_700_000_000.0,
        mode=Mode.ADVISORY,
        setpoints=setpoints,
        target=setpoints * 1.01,
        predicted={"profit_per_hour": (12.5, 0.5)},
        status="optimal",
        gap=0.01,
        solve_seconds=0.02,
        reasons=("ramp_limited",),
        fallback=False,
        applied=False,
        timings={"solve": 0.01},
    )
    stored = protocol.publish(decision)
    assert stored.version == 1 and stored == store.latest_record()  # the record, no re-read
    back = protocol.latest()
    assert back is not None and back is not decision
    np.testing.assert_array_equal(back.setpoints, decision.setpoints)
    assert back.target is not None and decision.target is not None
    np.testing.assert_array_equal(back.target, decision.target)
    assert back.version == 1
    for name in ("id", "line_time_s", "created_at", "mode", "predicted", "status"):
        assert getattr(back, name) == getattr(decision, name), name
    for name in ("gap", "solve_seconds", "reasons", "fallback", "applied", "timings"):
        assert getattr(back, name) == getattr(decision, name), name
    record = store.latest_record()
    assert record is not None and record.spec_hash == spec.spec_hash()
    assert record.payload == {**encode(decision, spec), "version": 1}
    store.close()
    other = Storage(tmp_path / DB_FILENAME, bundled_spec("two-station"))
    with other, pytest.raises(ConflictError, match="belongs to another line"):
        other.latest()
    with Storage(tmp_path / DB_FILENAME) as nospec, pytest.raises(StorageValueError, match="spec"):
        nospec.publish(decision)
