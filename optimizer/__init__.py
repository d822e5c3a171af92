"""The optimizer: the decision's whole lifecycle, from the solve to the published setpoints.

`make_problem` and `Objective` state what to maximise; `solve_fast` / `solve_exact` solve it on
the surrogate; `SetpointGuard` is the one door every setpoint passes (limits, grid, rate,
fallbacks with reasons); `Controller` runs cycles and modes and publishes `Decision`s.
Names are imported on first use (the decision's codec needs no torch).
"""

from linetwin import lazy_exports

_EXPORTS = {
    "Controller": "controller",
    "Decision": "controller",
    "MemoryStore": "controller",
    "Mode": "controller",
    "Objective": "problem",
    "OptimizerError": "errors",
    "Problem": "problem",
    "ProblemError": "errors",
    "Reason": "guard",
    "SetpointGuard": "guard",
    "Solution": "fast",
    "make_problem": "problem",
    "optimize_line": "oneshot",
    "solve_exact": "exact",
    "solve_fast": "fast",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
