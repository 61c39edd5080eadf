"""What the search read for one problem: the models' readings of its span groups and,
with ``Solver.solve(trace=True)``, the trace of its valid candidates (read by
`mycelium-rt diagnose` and the answer scorer's fitting)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from mycelium.executor import Arg

from .verifier import StepParts


@dataclass
class Variant:
    """One (group, operation) reading with its parsed arguments and log-probability."""

    op: str
    args: tuple[Arg, ...] | None  # None when the extractor's output is off-grammar
    logprob: float
    text: str
    # the parts of ``logprob``: log P(the group is a step) (0 without a reject label) and
    # log P(this operation | a step), from the classifier; the rest is the extractor's
    is_step_logprob: float = 0.0
    op_logprob: float = 0.0

    @property
    def parts(self) -> StepParts:
        """Where this reading's log-probability comes from (for the answer scorer)."""
        return StepParts(self.is_step_logprob, self.op_logprob,
                         self.logprob - self.is_step_logprob - self.op_logprob)


Readings = dict[tuple[int, ...], list[Variant]]  # span group -> its readings


@dataclass(frozen=True)
class SolveTrace:
    """What the search read and executed for one problem (``Solver.solve(trace=True)``),
    as `mycelium-rt diagnose` and the answer scorer's fitting read it. ``valid_values``,
    ``candidate_features`` and ``candidate_programs`` run in parallel: one entry per valid
    candidate program, best-scored first."""

    # every span group's model readings (span indices -> (operation, arguments) readings)
    variants: Readings = field(default_factory=dict)
    used_sets: list[tuple[int, ...]] = field(default_factory=list)  # span indices, per set
    valid_values: list[Fraction] = field(default_factory=list)  # each candidate's value
    candidate_features: list[list[float]] = field(default_factory=list)  # its scorer features
    candidate_programs: list[list[dict[str, Any]]] = field(default_factory=list)  # its record
    # a program writer's trace (runtime/write.py): no readings, no used sets; its finished
    # valid programs are the candidates
    programs_written: bool = False
