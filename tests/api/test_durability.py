"""Acknowledged writes survive SIGKILL (issue 5's durability check).

A child process (`durability_writer.py`) publishes decisions, records acknowledgements and
appends audit records in a loop, printing each one after its commit has returned. The test
kills it with SIGKILL at seeded random moments, many times, restarting it on the same database:
some kills land while it starts (opening, creating the schema), most while it writes. After
each kill, and at the end, every acknowledged record must be there exactly once, versions and
seqs must have no gaps, and the audit chain must verify.

This checks what a killed process leaves (SQLite's own atomic commit in WAL mode, our
transactions, the version and chain logic); that `synchronous=FULL` also survives a power cut
is SQLite's guarantee, checked here only as the setting in test_storage.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from linetwin.api.audit import AuditLog
from linetwin.api.storage import DB_FILENAME, Storage

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
ROUNDS = 40
SEED = 20_240_605


def acknowledged(out: Path) -> list[list[str]]:
    """The complete lines the child printed (a line cut by the kill was not acknowledged)."""
    text = out.read_text(encoding="ascii")
    lines = text.split("\n")[:-1]  # the part after the last newline is unfinished
    return [line.split() for line in lines]


def wait_for_lines(out: Path, n: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while out.read_bytes().count(b"\n") < n:
        assert proc.poll() is None, f"writer exited early: {proc.returncode}"
        assert time.monotonic() < deadline, "writer too slow"
        time.sleep(0.002)


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db = tmp_path / DB_FILENAME
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    decisions: dict[str, int] = {}  # acknowledged id -> version
    acks: Counter[tuple[str, int]] = Counter()
    audit: dict[int, str] = {}  # acknowledged seq -> hash
    killed_writing = 0
    for run in range(ROUNDS):
        out, err = tmp_path / f"run{run}.out", tmp_path / f"run{run}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "durability_writer.py"), str(db), str(run)],
                stdout=stdout,
                stderr=stderr,
                env=env,
            )
            try:
                if run % 4 == 0:  # anywhere from start-up on (run 0: while creating the schema)
                    time.sleep(rng.uniform(0.0, 0.15))
                else:  # after some acknowledged writes, at a random moment between them
                    wait_for_lines(out, rng.randint(1, 90), proc, time.monotonic() + 20)
                    time.sleep(rng.uniform(0.0, 0.01))
                assert proc.poll() is None, err.read_text()
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, err.read_text()
        lines = acknowledged(out)
        killed_writing += bool(lines)
        for kind, *fields in lines:
            if kind == "D":
                decisions[fields[1]] = int(fields[0])
            elif kind == "K":
                acks[fields[0], int(fields[1])] += 1
            else:
                audit[int(fields[0])] = fields[1]
        check(db, decisions, acks, audit, runs=run + 1)
    assert killed_writing >= ROUNDS * 3 // 4  # most kills hit a writing process
    assert len(decisions) >= 5 * ROUNDS and len(audit) >= 5 * ROUNDS


def check(
    db: Path,
    decisions: dict[str, int],
    acks: Counter[tuple[str, int]],
    audit: dict[int, str],
    runs: int,
) -> None:
    """Everything acknowledged is stored exactly once; at most one unacknowledged write of
    each kind per killed run; no gaps; the audit chain verifies."""
    if not db.exists():  # killed before it opened the database: nothing can be acknowledged
        assert not decisions and not acks and not audit
        return
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # never create it from here
    tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master")}
    if "decisions" not in tables:  # killed while creating the schema (its transaction rolled back)
        con.close()
        assert not decisions and not acks and not audit
        return
    stored = dict(con.execute("SELECT id, version FROM decisions").fetchall())
    versions = [v for (v,) in con.execute("SELECT version FROM decisions ORDER BY version")]
    ack_rows = Counter(con.execute("SELECT client, version FROM acknowledgements").fetchall())
    chain = dict(con.execute("SELECT seq, hash FROM audit").fetchall())
    con.close()
    for ident, version in decisions.items():
        assert stored.get(ident) == version, ident  # ids are unique: present once
    assert versions == list(range(1, len(versions) + 1))
    assert 0 <= len(stored) - len(decisions) <= runs
    for key, n in acks.items():
        assert ack_rows[key] == n, key
    assert 0 <= ack_rows.total() - acks.total() <= runs
    for seq, digest in audit.items():
        assert chain.get(seq) == digest, seq
    assert sorted(chain) == list(range(1, len(chain) + 1))
    assert 0 <= len(chain) - len(audit) <= runs
    with Storage(db) as storage:
        assert AuditLog(storage).verify() == (True, None, len(chain))
