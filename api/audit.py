"""The append-only, hash-chained audit log (in the service's SQLite file).

Each record's `hash` is the sha256 of a canonical JSON of its fields and the previous record's
hash (`prev_hash`; the first record's is `GENESIS_HASH`), so editing, deleting or reordering a
stored record breaks the chain at that point, and `verify` finds it. The last seq and hash are
also kept in `audit_head`, so a truncated tail is found too. Triggers in the database refuse
UPDATE and DELETE on the log and any insert that does not extend the head; appends run inside
`BEGIN IMMEDIATE`, so two writers (threads or processes) cannot fork the chain.

A hash chain in the same file detects tampering by anything that does not rewrite the whole
chain from the edit onwards; to also catch that, keep the head hash (`linetwin audit verify
--json` prints it) somewhere else, and compare.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from linetwin.api.storage import GENESIS_HASH, Storage, StorageValueError, check_limit, dumps

_COLUMNS = "seq, at, actor, action, old, new, reason, prev_hash, hash"


@dataclass(frozen=True)
class AuditRecord:
    """One audit record: who (`actor`) did what (`action`), old and new values, why, when.

    `at` is wall time, s since the epoch; `old_json` and `new_json` are the canonical JSON
    stored and hashed (`old` and `new` decode them).
    """

    seq: int
    at: float
    actor: str
    action: str
    old_json: str
    new_json: str
    reason: str
    prev_hash: str
    hash: str

    @property
    def old(self) -> Any:
        return json.loads(self.old_json)

    @property
    def new(self) -> Any:
        return json.loads(self.new_json)

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class Verification(NamedTuple):
    """The outcome of `AuditLog.verify`: ok, the first bad seq (None when ok), records seen."""

    ok: bool
    bad_seq: int | None
    records: int


@dataclass(frozen=True)
class AuditCheck:
    """`Verification` with what is wrong and the chain's head hash (`audit verify --json`)."""

    ok: bool
    bad_seq: int | None
    records: int
    problem: str | None
    head_hash: str


def record_hash(
    seq: int,
    at: float,
    actor: str,
    action: str,
    old_json: str,
    new_json: str,
    reason: str,
    prev_hash: str,
) -> str:
    """Return the sha256 (hex) of the canonical JSON of a record's fields and `prev_hash`."""
    canonical = json.dumps(
        {
            "seq": seq,
            "at": at,
            "actor": actor,
            "action": action,
            "old": old_json,
            "new": new_json,
            "reason": reason,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class AuditLog:
    """Append to, page through and verify the audit log of `storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def append(
        self, actor: str, action: str, *, old: Any = None, new: Any = None, reason: str = ""
    ) -> AuditRecord:
        """Append one record; committed (durably) on return, or joined to the caller's
        `storage.write()` transaction and committed with it."""
        for name, value in (("actor", actor), ("action", action)):
            if not isinstance(value, str) or not value:
                raise StorageValueError(f"audit record: {name} must be a non-empty string")
        if not isinstance(reason, str):
            raise StorageValueError("audit record: reason must be a string")
        old_json, new_json = dumps(old, "audit record: old"), dumps(new, "audit record: new")
        with self.storage.write("append audit record") as con:
            head_seq, prev = con.execute("SELECT seq, hash FROM audit_head").fetchone()
            seq, at = int(head_seq) + 1, float(self.storage.clock())
            digest = record_hash(seq, at, actor, action, old_json, new_json, reason, prev)
            record = AuditRecord(seq, at, actor, action, old_json, new_json, reason, prev, digest)
            con.execute(
                f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, at, actor, action, old_json, new_json, reason, prev, digest),
            )
            con.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, digest))
        return record

    def page(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Return up to `limit` (1-1000) records with seq above `after_seq`, oldest first."""
        check_limit(limit)
        with self.storage.read("read audit log") as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(after_seq), limit),
            ).fetchall()
        return [AuditRecord(*row) for row in rows]

    def head(self) -> tuple[int, str]:
        """Return the last record's (seq, hash): (0, GENESIS_HASH) when the log is empty."""
        with self.storage.read("read audit head") as con:
            seq, digest = con.execute("SELECT seq, hash FROM audit_head").fetchone()
        return int(seq), str(digest)

    def verify(self) -> Verification:
        """Check the whole chain: (ok, first bad seq or None, number of records)."""
        c = self.check()
        return Verification(c.ok, c.bad_seq, c.records)

    def check(self) -> AuditCheck:
        """Check the whole chain on one snapshot and say what is wrong, if anything.

        The first bad seq is the first record whose seq, link (`prev_hash`) or hash is not
        what the chain before it implies: an edited record (its own hash no longer matches;
        one whose hash was recomputed breaks the next record's link), a deleted one (its seq
        is missing), reordered ones (the hash covers the seq). A deleted tail shows as the
        head's seq missing.
        """
        with self.storage.read("verify audit log") as con:
            head = con.execute("SELECT seq, hash FROM audit_head").fetchall()
            cursor = con.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")
            expected, prev, count = 1, GENESIS_HASH, 0
            bad: tuple[int, str] | None = None
            while rows := cursor.fetchmany(1000):
                for row in rows:
                    count += 1
                    if bad is None:
                        bad = _check_row(AuditRecord(*row), expected, prev)
                        expected, prev = int(row[0]) + 1, str(row[8])
        if bad is None:
            if len(head) != 1:
                bad = (expected, "the audit head row is missing")
            elif (int(head[0][0]), str(head[0][1])) != (expected - 1, prev):
                if int(head[0][0]) >= expected:
                    bad = (expected, f"records {expected}..{head[0][0]} are missing")
                else:
                    bad = (expected - 1, "the last record does not match the audit head")
        head_hash = str(head[0][1]) if len(head) == 1 else prev
        if bad is None:
            return AuditCheck(True, None, count, None, head_hash)
        return AuditCheck(False, bad[0], count, bad[1], head_hash)


def _check_row(r: AuditRecord, expected: int, prev: str) -> tuple[int, str] | None:
    """Return (bad seq, problem) when `r` does not continue the chain at `expected`."""
    if r.seq != expected:
        if r.seq > expected:
            missing = f"{expected}" if r.seq == expected + 1 else f"{expected}..{r.seq - 1}"
            return expected, f"record {missing} missing"
        return r.seq, f"record {r.seq} out of order"
    if r.prev_hash != prev:
        return r.seq, f"record {r.seq} does not link to record {r.seq - 1}"
    try:
        digest = record_hash(
            r.seq, r.at, r.actor, r.action, r.old_json, r.new_json, r.reason, r.prev_hash
        )
    except (TypeError, ValueError):
        return r.seq, f"record {r.seq} has malformed fields"
    if digest != r.hash:
        return r.seq, f"record {r.seq} was altered (hash mismatch)"
    return None
