"""The optimizer: the decision's whole lifecycle, from the solve to the published decision.

`problem` states an optimisation, `fast` and `exact` solve it, `guard` is the only door to the
plant, `controller` runs the cycle, the modes, approvals, overrides and rollback, `store` is
where decisions are published, and `decision` is the one `Decision` type with its one wire
codec (`encode`, `decode`, `validate`). `oneshot` and `pareto` serve `linetwin optimize`.

Names are imported on first use: importing this package, `decision`, `store` or `errors`
imports neither torch nor the twin's kernels (a polling client decodes decisions without
them); the solving modules do.
"""

from linetwin import lazy_exports

_EXPORTS = {
    "Controller": "controller",
    "Decision": "decision",
    "DecisionStore": "store",
    "MemoryStore": "store",
    "Mode": "decision",
    "Objective": "problem",
    "OptimizerError": "errors",
    "Problem": "problem",
    "ProblemError": "errors",
    "Reason": "guard",
    "SetpointGuard": "guard",
    "Solution": "fast",
    "decode": "decision",
    "encode": "decision",
    "make_problem": "problem",
    "optimize_line": "oneshot",
    "solve_exact": "exact",
    "solve_fast": "fast",
    "validate": "decision",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
