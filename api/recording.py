"""Record a `serve` run: every snapshot of the real-time twin to a Parquet recording.

A thread of its own drains a subscription of the real-time twin into `twin.recorder.Recorder`
(a row per tick, a row group every 4,096 ticks), so a slow disk never holds up the twin or the
controller; the queue is large (a wall minute at 60x with 1 s ticks) and a snapshot dropped
because the writer fell that far behind is counted, not hidden. `stop()` writes the last rows
and moves the file into place (the recorder's atomic close). A process killed hard leaves no
file, only the recorder's temporary one.
"""

from __future__ import annotations

import threading
from pathlib import Path

from linetwin.twin.errors import RecordingError
from linetwin.twin.realtime import RealtimeTwin
from linetwin.twin.recorder import Recorder

QUEUE_TICKS = 4096


class RunRecorder:
    """Write every snapshot `twin` publishes to the recording at `path`."""

    def __init__(self, twin: RealtimeTwin, path: str | Path, *, seed: int | None) -> None:
        self.path = Path(path)
        self.twin = twin
        self.recorder = Recorder(self.path, twin.twin.spec, seed=seed, note="linetwin serve")
        self.rows = 0
        self.error: BaseException | None = None
        self._sub = twin.subscribe(maxsize=QUEUE_TICKS)
        self._thread = threading.Thread(target=self._run, name="linetwin-recorder", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Snapshots lost because the writer fell a whole queue behind."""
        return self._sub.dropped

    def _run(self) -> None:
        try:
            for snap in self._sub:
                self.recorder.write(snap)
                self.rows += 1
        except BaseException as exc:  # keep serving; stop() reports it
            self.error = exc
            self.recorder.abort()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, close the recording and move it into place."""
        self._sub.close()
        self._thread.join(timeout)
        self.twin.unsubscribe(self._sub)
        if self.error is not None:
            raise RecordingError(f"{self.path}: recording failed: {self.error}") from self.error
        self.recorder.close()
