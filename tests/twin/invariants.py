"""Invariants every snapshot of the twin must satisfy, shared by several test modules."""

from __future__ import annotations

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.snapshot import Snapshot


def assert_conserved(snap: Snapshot) -> None:
    """Every part released is out, scrapped or inside; flows balance station by station."""
    assert np.all(snap.released == snap.good_out + snap.scrap_total + snap.work_in_process)
    done, scrap = snap.completed, snap.scrapped
    working = np.isin(snap.status, (L.BUSY, L.DOWN)).astype(np.int64)  # part not yet finished
    blocked = (snap.status == L.BLOCKED).astype(np.int64)  # finished part waiting to move
    assert np.all(snap.released == done[:, 0] + working[:, 0])
    passed = done - scrap
    assert np.all(
        passed[:, :-1] == done[:, 1:] + working[:, 1:] + snap.buffer_level + blocked[:, :-1]
    )
    assert np.all(passed[:, -1] == snap.good_out)
    assert np.all(snap.scrapped.sum(axis=1) == snap.scrap_total)
    cap = np.array([s.buffer_after or 0 for s in snap.spec.stations[:-1]])
    assert np.all(snap.buffer_level >= 0)
    assert np.all(snap.buffer_level <= cap)
    assert np.allclose(snap.status_time_s.sum(axis=2), snap.time_s, rtol=1e-9, atol=1e-6)
