"""The surrogate: a calibrated ensemble of MLPs learned from the twin; its data and checkpoints.

`Surrogate.predict(state, setpoints)` gives the line's KPI rates per ensemble member, with an
OOD score; `train_surrogate(spec, settings)` generates data with the twin and fits it;
`load`/`save` read and write checkpoints; `load_or_train` finds the model a job should use.
Names are imported on first use (torch loads only when a model is needed).
"""

from linetwin import lazy_exports

_EXPORTS = {
    "Dataset": "dataset",
    "FeatureSchema": "features",
    "ModelError": "errors",
    "Prediction": "surrogate",
    "Surrogate": "surrogate",
    "TrainSettings": "pipeline",
    "bundled_checkpoint": "pretrained",
    "derived_kpis": "surrogate",
    "load": "checkpoint",
    "load_or_train": "resolve",
    "recent_throughput": "dataset",
    "save": "checkpoint",
    "train_surrogate": "pipeline",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
