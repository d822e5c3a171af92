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

from collections.abc import Callable
from importlib import import_module
from importlib import metadata as _metadata
from typing import Any

try:
    __version__ = _metadata.version("linetwin")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """Return a module `__getattr__` that imports `exports[name]` (a module of `package`) on
    first use: a package lists its public names in `__all__` without importing torch, FastAPI
    or Gymnasium for a caller that needs none of them (the polling client, the decision codec).
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{module}"), name)

    return getattr_


__all__ = ["__version__", "lazy_exports"]
