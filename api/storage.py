"""Durable storage of the service: one SQLite file (WAL, `synchronous=FULL`).

`Storage` owns the connections (one per thread), the schema and its forward migrations, the
published decisions (it is the controller's `DecisionStore`) and the control systems'
acknowledgements. The audit log (`api.audit`) and the API keys (`api.keys`) live in the same
file and write through `Storage.write()`, so a key change and its audit record commit together.

Every write method commits before it returns: what a caller acknowledges is durable (WAL with
`synchronous=FULL` syncs the log on every commit). Errors are `StorageError`s naming the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linetwin.api.errors import ApiError
from linetwin.optimizer.decision import Decision, decode, encode
from linetwin.optimizer.errors import DecisionCodecError

if TYPE_CHECKING:
    from linetwin.twin.spec import LineSpec

DB_FILENAME = "linetwin.sqlite3"
GENESIS_HASH = "0" * 64
"""`prev_hash` of the first audit record."""


class StorageError(ApiError):
    """The database cannot be opened, read or written; the message names the file."""


class NotFoundError(StorageError, LookupError):
    """A referenced row (decision version, key) does not exist."""


class ConflictError(StorageError):
    """A write contradicts what is stored (duplicate id, another line's decisions, ...)."""


class StorageValueError(StorageError, ValueError):
    """An argument or payload cannot be stored as given."""


def default_data_dir() -> Path:
    """Return `$LINETWIN_DATA_DIR`, or `~/.local/share/linetwin` (the model cache's base too)."""
    return Path(os.environ.get("LINETWIN_DATA_DIR") or Path.home() / ".local/share/linetwin")


def database_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the database file of `data_dir` (default: `default_data_dir()`)."""
    return Path(data_dir if data_dir is not None else default_data_dir()) / DB_FILENAME


def dumps(value: Any, what: str) -> str:
    """Encode `value` as compact, key-sorted strict JSON (NaN and infinities become null)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        from linetwin.twin.jsonable import finite_json

        return dumps(finite_json(value), what)
    except TypeError as exc:
        raise StorageValueError(f"{what}: not JSON data: {exc}") from None


# -- schema ---------------------------------------------------------------------------------
def _refuse(message: str) -> str:
    """A trigger body that aborts the statement with `message`."""
    return "BEGIN SELECT RAISE(ABORT, '{}'); END".format(message.replace("'", "''"))


# Forward-only migrations: (version, description, statements). Never edit a released one;
# append the next. Each runs in the transaction that records it in `schema_migrations`.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "decisions, acknowledgements, api keys, hash-chained audit log",
        (
            """CREATE TABLE decisions (
                version INTEGER PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                created_at REAL NOT NULL,
                line_time_s REAL NOT NULL,
                mode TEXT NOT NULL,
                spec_hash TEXT,
                payload TEXT NOT NULL CHECK (json_valid(payload)))""",
            """CREATE TABLE acknowledgements (
                id INTEGER PRIMARY KEY,
                client TEXT NOT NULL CHECK (length(client) > 0),
                version INTEGER NOT NULL REFERENCES decisions(version),
                values_json TEXT NOT NULL CHECK (json_valid(values_json)),
                received_at REAL NOT NULL)""",
            "CREATE INDEX acknowledgements_by_client ON acknowledgements(client, id)",
            """CREATE TABLE api_keys (
                key_id TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL
                    CHECK (role IN ('viewer', 'controller', 'engineer', 'admin')),
                label TEXT NOT NULL,
                created_at REAL NOT NULL,
                revoked_at REAL)""",
            "CREATE TRIGGER api_keys_no_delete BEFORE DELETE ON api_keys "
            + _refuse("api keys are revoked, never deleted"),
            "CREATE TRIGGER api_keys_only_revoke BEFORE UPDATE ON api_keys WHEN "
            "OLD.revoked_at IS NOT NULL OR NEW.revoked_at IS NULL OR NEW.key_id IS NOT "
            "OLD.key_id OR NEW.hash IS NOT OLD.hash OR NEW.role IS NOT OLD.role OR "
            "NEW.label IS NOT OLD.label OR NEW.created_at IS NOT OLD.created_at "
            + _refuse("an api key can only be revoked, once"),
            """CREATE TABLE audit (
                seq INTEGER PRIMARY KEY,
                at REAL NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                old TEXT NOT NULL,
                new TEXT NOT NULL,
                reason TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL UNIQUE)""",
            # The head (last seq and hash) is kept apart so a truncated tail is detectable.
            """CREATE TABLE audit_head (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                seq INTEGER NOT NULL,
                hash TEXT NOT NULL)""",
            f"INSERT INTO audit_head VALUES (1, 0, '{GENESIS_HASH}')",
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
            + _refuse("the audit log is append-only: UPDATE refused"),
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
            + _refuse("the audit log is append-only: DELETE refused"),
            "CREATE TRIGGER audit_extends_head BEFORE INSERT ON audit WHEN "
            "NEW.seq IS NOT (SELECT seq + 1 FROM audit_head) OR "
            "NEW.prev_hash IS NOT (SELECT hash FROM audit_head) "
            + _refuse("an audit record must extend the chain's head"),
            "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
            + _refuse("the audit head cannot be deleted"),
            "CREATE TRIGGER audit_head_advances BEFORE UPDATE ON audit_head WHEN "
            "NEW.seq IS NOT OLD.seq + 1 OR NOT EXISTS (SELECT 1 FROM audit WHERE "
            "seq = NEW.seq AND hash = NEW.hash AND prev_hash = OLD.hash) "
            + _refuse("the audit head only advances to the record just appended"),
        ),
    ),
    (
        2,
        "api key role 'gateway' (sends plant data)",
        (
            "DROP TRIGGER api_keys_no_delete",
            "DROP TRIGGER api_keys_only_revoke",
            "ALTER TABLE api_keys RENAME TO api_keys_v1",
            """CREATE TABLE api_keys (
                key_id TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL
                    CHECK (role IN ('viewer', 'controller', 'gateway', 'engineer', 'admin')),
                label TEXT NOT NULL,
                created_at REAL NOT NULL,
                revoked_at REAL)""",
            "INSERT INTO api_keys (key_id, hash, role, label, created_at, revoked_at) "
            "SELECT key_id, hash, role, label, created_at, revoked_at FROM api_keys_v1",
            "DROP TABLE api_keys_v1",
            "CREATE TRIGGER api_keys_no_delete BEFORE DELETE ON api_keys "
            + _refuse("api keys are revoked, never deleted"),
            "CREATE TRIGGER api_keys_only_revoke BEFORE UPDATE ON api_keys WHEN "
            "OLD.revoked_at IS NOT NULL OR NEW.revoked_at IS NULL OR NEW.key_id IS NOT "
            "OLD.key_id OR NEW.hash IS NOT OLD.hash OR NEW.role IS NOT OLD.role OR "
            "NEW.label IS NOT OLD.label OR NEW.created_at IS NOT OLD.created_at "
            + _refuse("an api key can only be revoked, once"),
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


# -- records --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecisionRecord:
    """One stored decision: its columns and the published payload (`decision.encode`)."""

    version: int
    id: str
    created_at: float
    line_time_s: float
    mode: str
    spec_hash: str | None
    payload_json: str

    @property
    def payload(self) -> dict[str, Any]:
        """The payload, decoded (a new dict on each call)."""
        data: dict[str, Any] = json.loads(self.payload_json)
        return data


@dataclass(frozen=True)
class AckRecord:
    """A control system's acknowledgement: what it applied (`values`) of decision `version`."""

    client: str
    version: int
    values: Any
    received_at: float
    age_s: float
    """Seconds since `received_at` when the record was read (0 when just written)."""


_DECISION_COLUMNS = "version, id, created_at, line_time_s, mode, spec_hash, payload"


def _decision(row: tuple[Any, ...]) -> DecisionRecord:
    return DecisionRecord(*row)


class Storage:
    """The service's SQLite database at `path`; safe to share between threads.

    `spec`, when given, is the line whose decisions `publish` and `latest` handle (the
    `DecisionStore` protocol speaks `Decision`s, which need the spec to encode and decode).
    `create=False` refuses to create a missing file. `clock` gives wall time, s since the epoch.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: LineSpec | None = None,
        *,
        create: bool = True,
        busy_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._write_lock = threading.Lock()  # in-process writers queue here, not in SQLite
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._version_lock = threading.Lock()
        self._version_con: sqlite3.Connection | None = None
        self._closed = False
        self._users = 0  # transactions in progress, on any thread
        self._users_cond = threading.Condition()
        if not self.path.exists():
            if not create:
                raise NotFoundError(f"{self.path}: no database here")
            self._create_private_file()
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    # -- connections and transactions ----------------------------------------------------
    def _create_private_file(self) -> None:
        """Create the file readable by its owner only (it holds key hashes and the audit)."""
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create database: {exc.strerror}") from None

    def _connection(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None:
            return con
        if self._closed:
            raise StorageError(f"{self.path}: storage is closed")
        with self.errors("open"):
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            con = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,  # only for close(); each thread uses its own
            )
            try:
                mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError(f"{self.path}: cannot use WAL journal (got {mode!r})")
                con.execute("PRAGMA synchronous=FULL")
                con.execute("PRAGMA foreign_keys=ON")
                con.execute("PRAGMA recursive_triggers=ON")  # REPLACE fires DELETE triggers
            except BaseException:
                con.close()
                raise
        with self._all_lock:
            self._all.append(con)
        self._local.con = con
        return con

    def data_version(self) -> int:
        """Return a number that changes whenever any connection, in this process or another,
        has committed to the database since the last call (SQLite's `PRAGMA data_version`
        on a private connection that never writes); cheap enough to call per request."""
        with self._version_lock:
            con = self._version_con
            if con is None:
                if self._closed:
                    raise StorageError(f"{self.path}: storage is closed")
                with self.errors("open"):
                    con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                with self._all_lock:
                    self._all.append(con)
                self._version_con = con
            try:  # no context manager here: this runs on every authenticated request
                return int(con.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: read data version: {exc}") from exc

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Translate sqlite3 errors raised inside into `StorageError`s naming the file."""
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"{self.path}: {what}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {what}: {exc}") from exc

    @contextlib.contextmanager
    def write(self, what: str = "write") -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction, committed (durably) when the block ends.

        `BEGIN IMMEDIATE` takes the database's write lock first, so reads inside see the
        latest data and no other writer (thread or process) interleaves. Re-entrant: a
        nested `write()` on the same thread joins the outer transaction.
        """
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                with self.errors(what):
                    yield self._connection()
            finally:
                self._local.depth = depth
            return
        con = self._connection()
        with self._in_use(), self._write_lock:
            with self.errors(what):
                con.execute("BEGIN IMMEDIATE")
            self._local.depth = 1
            try:
                with self.errors(what):
                    yield con
                    con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise
            finally:
                self._local.depth = 0

    @contextlib.contextmanager
    def read(self, what: str = "read") -> Iterator[sqlite3.Connection]:
        """Run the block's queries on one consistent snapshot (a read transaction)."""
        con = self._connection()
        if con.in_transaction:  # inside write() or read(): already consistent
            with self.errors(what):
                yield con
            return
        with self._in_use(), self.errors(what):
            con.execute("BEGIN")
            try:
                yield con
            finally:
                con.execute("COMMIT")

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        """Count a transaction in progress, so that `close` waits for it to end."""
        with self._users_cond:
            if self._closed:
                raise StorageError(f"{self.path}: storage is closed")
            self._users += 1
        try:
            yield
        finally:
            with self._users_cond:
                self._users -= 1
                self._users_cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Close every thread's connection once the transactions in progress have ended (up
        to `timeout` s: closing a connection another thread is using can crash the process);
        later calls raise `StorageError`."""
        with self._users_cond:
            self._closed = True
            self._users_cond.wait_for(lambda: self._users == 0, timeout)
            if self._users:
                raise StorageError(
                    f"{self.path}: {self._users} transaction(s) still running after {timeout} s; "
                    "not closing under them"
                )
        with self._all_lock:
            for con in self._all:
                con.close()
            self._all.clear()
        with self._version_lock:
            self._version_con = None
        self._local = threading.local()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.write("migrate schema") as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "applied_at REAL NOT NULL, description TEXT NOT NULL)"
            )
            current = con.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            have = int(current.fetchone()[0])
            if have > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path}: schema version {have} is newer than this linetwin knows "
                    f"({SCHEMA_VERSION}): upgrade linetwin"
                )
            for version, description, statements in MIGRATIONS:
                if version <= have:
                    continue
                for statement in statements:
                    con.execute(statement)
                con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (version, self.clock(), description),
                )

    def schema_version(self) -> int:
        """Return the schema version of the file."""
        with self.read() as con:
            return int(con.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])

    # -- decisions (the controller's DecisionStore) ----------------------------------------
    def publish(self, decision: Decision) -> DecisionRecord:
        """Store `decision` as the next version (assigned here; see `publish_json`) and
        return the stored record: its version and the payload as published."""
        spec = self._need_spec("publish a decision")
        try:
            payload = encode(decision, spec)
        except DecisionCodecError as exc:
            raise StorageValueError(f"{self.path}: cannot publish: {exc}") from None
        return self.publish_json(payload, spec_hash=spec.spec_hash())

    def publish_json(
        self, payload: Mapping[str, Any], spec_hash: str | None = None
    ) -> DecisionRecord:
        """Store a decision payload (`decision.encode`) as the next version and return it.

        The version is assigned inside the write transaction, one more than the highest
        stored, and written into the payload's `version`: concurrent publishers get distinct,
        increasing versions. The payload needs `id` (unique), `created_at`, `line_time_s`
        and `mode`.
        """
        fields = _payload_fields(payload)
        with self.write("publish decision") as con:
            version = int(
                con.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM decisions").fetchone()[0]
            )
            if con.execute("SELECT 1 FROM decisions WHERE id = ?", (fields[0],)).fetchone():
                raise ConflictError(f"{self.path}: decision id {fields[0]!r} is already published")
            text = dumps({**payload, "version": version}, "decision payload")
            con.execute(
                f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (version, *fields, spec_hash, text),
            )
        return DecisionRecord(version, *fields, spec_hash, text)

    def next_version(self) -> int:
        """Return the version the next `publish` will assign, if no other publish comes first
        (a read for tests and tools: publishers take the version `publish` returns)."""
        with self.read() as con:
            row = con.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM decisions").fetchone()
            return int(row[0])

    def latest_record(self) -> DecisionRecord | None:
        """Return the newest stored decision, or None."""
        with self.read() as con:
            row = con.execute(
                f"SELECT {_DECISION_COLUMNS} FROM decisions ORDER BY version DESC LIMIT 1"
            ).fetchone()
        return None if row is None else _decision(row)

    def latest(self) -> Decision | None:
        """Return the newest stored decision as a `Decision` of `spec`, or None."""
        record = self.latest_record()
        return None if record is None else self.to_decision(record)

    def decision(self, version: int) -> DecisionRecord | None:
        """Return decision `version`, or None."""
        with self.read() as con:
            row = con.execute(
                f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE version = ?", (int(version),)
            ).fetchone()
        return None if row is None else _decision(row)

    def decisions(self, after_version: int = 0, limit: int = 100) -> list[DecisionRecord]:
        """Return up to `limit` (1-1000) decisions with versions above `after_version`, oldest
        first; page on with the last one's version."""
        check_limit(limit)
        with self.read() as con:
            rows = con.execute(
                f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE version > ? "
                "ORDER BY version LIMIT ?",
                (int(after_version), int(limit)),
            ).fetchall()
        return [_decision(r) for r in rows]

    def to_decision(self, record: DecisionRecord) -> Decision:
        """Decode a stored decision into a `Decision` of this storage's line."""
        spec = self._need_spec("decode a decision")
        if record.spec_hash is not None and record.spec_hash != spec.spec_hash():
            raise ConflictError(
                f"{self.path}: decision {record.version} belongs to another line "
                f"(spec {record.spec_hash[:12]}, serving {spec.spec_hash()[:12]})"
            )
        try:
            return decode(record.payload, spec)
        except DecisionCodecError as exc:
            raise StorageError(
                f"{self.path}: decision {record.version}: malformed payload: {exc}"
            ) from None

    def _need_spec(self, what: str) -> LineSpec:
        if self.spec is None:
            raise StorageValueError(f"{self.path}: cannot {what}: no line spec given to Storage")
        return self.spec

    # -- acknowledgements ------------------------------------------------------------------
    def record_ack(self, client: str, version: int, values: Any) -> AckRecord:
        """Store that `client` applied `values` of decision `version`; durable on return."""
        if not isinstance(client, str) or not client:
            raise StorageValueError(f"{self.path}: acknowledgement: client must be a name")
        if isinstance(version, bool) or not isinstance(version, int):
            raise StorageValueError(f"{self.path}: acknowledgement: version must be an integer")
        text = dumps(values, "acknowledgement values")
        now = self.clock()
        with self.write("record acknowledgement") as con:
            if con.execute("SELECT 1 FROM decisions WHERE version = ?", (version,)).fetchone():
                con.execute(
                    "INSERT INTO acknowledgements (client, version, values_json, received_at) "
                    "VALUES (?, ?, ?, ?)",
                    (client, int(version), text, now),
                )
            else:
                raise NotFoundError(f"{self.path}: no decision version {version} to acknowledge")
        return AckRecord(client, int(version), json.loads(text), now, 0.0)

    def acks(self) -> list[AckRecord]:
        """Return each client's latest acknowledgement with its age, by client name."""
        with self.read() as con:
            rows = con.execute(
                "SELECT a.client, a.version, a.values_json, a.received_at "
                "FROM acknowledgements a WHERE a.id = "
                "(SELECT MAX(b.id) FROM acknowledgements b WHERE b.client = a.client) "
                "ORDER BY a.client"
            ).fetchall()
        now = self.clock()
        return [AckRecord(c, v, json.loads(t), at, max(0.0, now - at)) for c, v, t, at in rows]


def check_limit(limit: int) -> None:
    if not (isinstance(limit, int) and 1 <= limit <= 1000):
        raise StorageValueError(f"limit must be an integer from 1 to 1000, got {limit!r}")


def _payload_fields(payload: Mapping[str, Any]) -> tuple[str, float, float, str]:
    """Return (id, created_at, line_time_s, mode) of a decision payload, checked."""
    if not isinstance(payload, Mapping):
        raise StorageValueError(f"decision payload: expected an object, got {type(payload)}")
    try:
        ident, created, line_time, mode = (
            payload[k] for k in ("id", "created_at", "line_time_s", "mode")
        )
    except KeyError as exc:
        raise StorageValueError(f"decision payload: missing {exc.args[0]!r}") from None
    if not isinstance(ident, str) or not ident:
        raise StorageValueError(f"decision payload: id must be a non-empty string, got {ident!r}")
    if not isinstance(mode, str):
        raise StorageValueError(f"decision payload: mode must be a string, got {mode!r}")
    for name, value in (("created_at", created), ("line_time_s", line_time)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise StorageValueError(f"decision payload: {name} must be a finite number")
    return ident, float(created), float(line_time), mode
