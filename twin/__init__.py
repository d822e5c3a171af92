"""The line twin: spec, batched exact dynamics, sensors, KPIs, real time and recordings.

One verb: `Twin(spec, n).step(dt)` returns a `Snapshot`; `window_kpis(a, b)` gives KPIs.
"""

from twin.errors import DeviceError, RecordingError, SetpointError, SpecError, TwinError
from twin.kpi import Kpis, window_kpis
from twin.sensors import Readings, SensorFault
from twin.sim import Twin, resolve_device
from twin.snapshot import Snapshot
from twin.spec import LineSpec, bundled_spec, load_spec, loads_spec

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
