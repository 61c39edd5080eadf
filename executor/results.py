"""What an execution returns: a trace of the steps and the value, or an error."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from .program import Arg


class ExecutionError(Exception):
    """An invalid program or input; ``execute`` reports it in ``ExecutionResult.error``."""


@dataclass(frozen=True)
class StepTrace:
    """One executed step: its operation, resolved arguments and exact result."""

    op: str
    args: list[tuple[Arg, Fraction]]
    result: Fraction


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of ``execute``: ``value`` is the last step's result when ``ok``.

    ``steps`` holds the steps executed before any error; ``error`` explains a failure.
    """

    ok: bool
    value: Fraction | None
    steps: list[StepTrace] = field(default_factory=list)
    error: str | None = None

    def unwrap(self) -> Fraction:
        """The value, or raise :class:`ExecutionError` with the error message."""
        if not self.ok or self.value is None:
            raise ExecutionError(self.error or "execution failed")
        return self.value
