"""Write to a linetwin database in a loop, printing each write once its commit has returned.

Used by the durability and concurrency tests (run as a child process, killed at will):

    python durability_writer.py DB RUN [--audit-only] [--count N]

prints one line per acknowledged write, flushed at once:
    D <version> <decision id>       a published decision
    K <client> <version>            an acknowledgement
    A <seq> <hash>                  an audit record
and runs until killed, or `--count` iterations are done.
"""

from __future__ import annotations

import argparse
import sys
import time

from linetwin.api.audit import AuditLog
from linetwin.api.storage import Storage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("run", type=int)
    parser.add_argument("--audit-only", action="store_true")
    parser.add_argument("--count", type=int, default=None)
    args = parser.parse_args()
    storage = Storage(args.db)
    audit = AuditLog(storage)
    out = sys.stdout
    i = 0
    while args.count is None or i < args.count:
        if not args.audit_only:
            ident = f"r{args.run}-{i}"
            record = storage.publish_json(
                {
                    "id": ident,
                    "created_at": time.time(),
                    "line_time_s": float(i),
                    "mode": "closed",
                    "setpoints": {"s1": {"speed": 1.0 + i * 1e-3}},
                }
            )
            out.write(f"D {record.version} {ident}\n")
            out.flush()
            client = f"plc-{args.run % 3}"
            storage.record_ack(client, record.version, {"s1": {"speed": 1.0 + i * 1e-3}})
            out.write(f"K {client} {record.version}\n")
            out.flush()
        entry = audit.append(
            f"writer-{args.run}", "test.write", old={"i": i - 1}, new={"i": i}, reason="test"
        )
        out.write(f"A {entry.seq} {entry.hash}\n")
        out.flush()
        i += 1
    storage.close()


if __name__ == "__main__":
    main()
