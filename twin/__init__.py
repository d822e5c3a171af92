"""The line twin: spec, batched exact dynamics, sensors, KPIs, real time and recordings.

One verb: `Twin(spec, n).step(dt)` returns a `Snapshot`; `window_kpis(a, b)` gives KPIs.
"""

from linetwin.twin.errors import DeviceError, RecordingError, SetpointError, SpecError, TwinError
from linetwin.twin.kpi import Kpis, window_kpis
from linetwin.twin.sensors import Readings, SensorFault
from linetwin.twin.sim import Twin, resolve_device
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec, bundled_spec, load_spec, loads_spec

__all__ = [
    "DeviceError",
    "Kpis",
    "LineSpec",
    "Readings",
    "RecordingError",
    "SensorFault",
    "SetpointError",
    "Snapshot",
    "SpecError",
    "Twin",
    "TwinError",
    "bundled_spec",
    "load_spec",
    "loads_spec",
    "resolve_device",
    "window_kpis",
]
