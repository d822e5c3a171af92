"""linetwin: a digital-twin production line optimizer.

The distribution installs one namespace. Its packages live in the repository's top-level
folders and import one way (`cli -> api -> replay -> optimizer -> models -> twin`):

- `linetwin.twin`: line spec, exact batched dynamics, sensors, KPIs, real time, recordings.
- `linetwin.models`: the surrogate ensemble, its data, training, checkpoints, KPI estimates.
- `linetwin.optimizer`: problem, solvers, setpoint guard, controller, the `Decision` and its codec.
- `linetwin.replay`: offline replay of recorded runs, CSV import, counterfactuals, Gymnasium env.
- `linetwin.api`: the HTTP service, storage, keys, audit, metrics, web page, polling client.
- `linetwin.cli`: the command line, the composition root.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("linetwin")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
