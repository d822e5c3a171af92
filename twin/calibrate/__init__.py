"""Calibration from logs: fit a line spec to a plant's recording, with uncertainty, and
validate it on the held-out tail (`linetwin calibrate`, `docs/calibrate.md`).

    from linetwin.twin.calibrate import calibrate, write_spec
    result = calibrate("plant.parquet", skeleton, holdout=0.25)
    write_spec("fitted.toml", result.spec)
"""

from linetwin.twin.calibrate.errors import CalibrationError
from linetwin.twin.calibrate.run import Calibration, calibrate
from linetwin.twin.calibrate.spec_out import fitted_spec, spec_toml, write_spec

__all__ = [
    "Calibration",
    "CalibrationError",
    "calibrate",
    "fitted_spec",
    "spec_toml",
    "write_spec",
]
