"""The optimizer: the decision's whole lifecycle, from the solve to the published decision.

`problem` states an optimisation, `fast` and `exact` solve it, `guard` is the only door to the
plant, `controller` runs the cycle, the modes, approvals, overrides and rollback, `store` is
where decisions are published, and `decision` is the one `Decision` type with its one wire
codec (`encode`, `decode`, `validate`). `oneshot` and `pareto` serve `linetwin optimize`.

Importing this package, `decision`, `store` or `errors` imports neither torch nor the twin's
kernels (a polling client decodes decisions without them); the solving modules do.
"""

from linetwin.optimizer.decision import Decision, Mode, decode, encode, validate
from linetwin.optimizer.errors import OptimizerError
from linetwin.optimizer.store import DecisionStore, MemoryStore

__all__ = [
    "Decision",
    "DecisionStore",
    "MemoryStore",
    "Mode",
    "OptimizerError",
    "decode",
    "encode",
    "validate",
]
