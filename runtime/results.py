"""Result records of the solver, as written to JSONL."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from mycelium.executor import format_fraction

from .trace import SolveTrace


@dataclass(frozen=True)
class Span:
    """A quantity the segmenter marked: character span, text and parsed value."""

    start: int
    end: int
    text: str
    value: Fraction | None
    used_prob: float = 1.0  # the segmenter's probability that the solution uses it


def answer_number(value: Fraction) -> int | float:
    """JSON number of an exact value: an int when integral, else the nearest float."""
    return int(value) if value.denominator == 1 else float(value)


@dataclass
class SolveResult:
    """The answer to one problem, with the executed program that produced it."""

    id: Any
    answer: int | float | None = None
    answer_exact: str | None = None
    program: list[dict[str, Any]] = field(default_factory=list)
    confidence: float = 0.0
    error: str | None = None
    spans: list[Span] = field(default_factory=list)
    trace: SolveTrace | None = None  # readings and candidates (Solver.solve(trace=True))

    @classmethod
    def from_value(cls, id: Any, value: Fraction, **fields: Any) -> SolveResult:
        """A successful result for an exact value."""
        return cls(
            id=id, answer=answer_number(value), answer_exact=format_fraction(value), **fields
        )

    def to_record(self) -> dict[str, Any]:
        """The JSONL record: id, answer, answer_exact, program, confidence, error."""
        return {
            "id": self.id,
            "answer": self.answer,
            "answer_exact": self.answer_exact,
            "program": self.program,
            "confidence": round(self.confidence, 6),
            "error": self.error,
        }
