"""Where decisions are published: the store protocol, and an in-process store.

A store assigns each published decision its version (one more than the last) and returns the
stored record, which carries it: the API's SQLite `Storage` returns a `DecisionRecord` (the
encoded payload too, so nobody reads it back), `MemoryStore` the `Decision` with its version.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Protocol, TypeVar

from linetwin.optimizer.decision import Decision


class Versioned(Protocol):
    """A stored record: whatever else it holds, it has the version the store assigned."""

    @property
    def version(self) -> int: ...


StoredT_co = TypeVar("StoredT_co", bound=Versioned, covariant=True)


class DecisionStore(Protocol[StoredT_co]):
    """Where a controller publishes its decisions."""

    def publish(self, decision: Decision) -> StoredT_co:
        """Store `decision` as the next version (its own `version` is ignored) and return
        the stored record."""
        ...

    def latest(self) -> Decision | None:
        """The newest published decision, or None."""
        ...


class MemoryStore:
    """A thread-safe in-process decision store (tests, replay, benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decisions: list[Decision] = []

    def publish(self, decision: Decision) -> Decision:
        """Store `decision` as the next version; return it with that version."""
        with self._lock:
            stored = replace(decision, version=len(self.decisions) + 1)
            self.decisions.append(stored)
            return stored

    def latest(self) -> Decision | None:
        with self._lock:
            return self.decisions[-1] if self.decisions else None
