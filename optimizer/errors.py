"""Errors raised by the optimizer package: one base class, a short tree."""


class OptimizerError(Exception):
    """Base class of every error the optimizer package raises on purpose."""


class SolverError(OptimizerError, RuntimeError):
    """OR-Tools failed or returned no usable solution (its status is in the message)."""


class ProblemError(OptimizerError, ValueError):
    """An optimisation problem is malformed (bad weights, caps, locks or bounds).

    `field` names the offending input (`"scrap_rate_cap"`, ...) when there is one, so a caller
    can point at it without parsing the message.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DecisionCodecError(OptimizerError, ValueError):
    """A decision payload is malformed, or does not fit the line (the message names the field)."""


class StateError(OptimizerError):
    """A change does not fit the controller's state: nothing pending, another decision
    pending, the wrong mode."""


class NotHeldError(StateError, LookupError):
    """No override holds the station named."""
