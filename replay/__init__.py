"""Offline replay of recorded runs for researchers: import plant logs, replay decisions of a
model and optimizer version, run counterfactual policies on forked twins, write reports.

Imports point one way: `api` may use `replay`; `replay` uses `optimizer`, `models` and `twin`.
Names are imported on first use (the Gymnasium environment needs the `gym` extra).
"""

from linetwin import lazy_exports

_EXPORTS = {
    "Policy": "policies",
    "ReplayError": "errors",
    "ReplayResult": "run",
    "ReplaySettings": "run",
    "export_csv": "csv_export",
    "import_csv": "importer",
    "parse_policies": "policies",
    "replay": "run",
    "write_outputs": "outputs",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
