"""Benchmark problems: questions for the solvers, gold answers kept apart for scoring.

The solvers only ever receive :class:`Problem` ids and questions; the gold answers
are read into a separate mapping and used only after solving, to score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from mycelium.executor.numbers import parse_number
from mycelium.runtime.diagnose import gold_value

SPLITS = ("all", "dev")
DEV_MODULUS = 10  # dev split of GSM8K train: 0-based line i with i % 10 == 0


@dataclass(frozen=True)
class Problem:
    """One problem as the solvers see it: an id and the question text, nothing else."""

    id: Any
    question: str


def _selected(path: Path, split: str, limit: int | None):
    """(line index, record) of the split's records with a non-empty question."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    count = 0
    with path.open("r", encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if limit is not None and count >= limit:
                return
            if split == "dev" and index % DEV_MODULUS:
                continue
            if not line.strip():
                continue
            record = json.loads(line)
            question = record.get("question") if isinstance(record, dict) else None
            if not isinstance(question, str) or not question.strip():
                continue
            count += 1
            yield index, record


def _record_id(index: int, record: dict[str, Any]) -> Any:
    value = record.get("id")
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else index


def load_problems(path: str | Path, split: str = "all", limit: int | None = None) -> list[Problem]:
    """The problems of a JSONL file (``question`` and optional ``id``), in file order.

    ``split="dev"`` keeps the 0-based lines i with i % 10 == 0 (the GSM8K train dev
    split); ``limit`` keeps the first N selected problems. Gold fields are not read.
    """
    return [
        Problem(_record_id(index, record), record["question"])
        for index, record in _selected(Path(path), split, limit)
    ]


def load_gold(
    path: str | Path, split: str = "all", limit: int | None = None
) -> list[Fraction | None]:
    """Gold answers aligned with :func:`load_problems` (``gold``, or GSM8K ``#### x``).

    Call only after solving: the solvers never see these values.
    """
    return [gold_value(record) for _index, record in _selected(Path(path), split, limit)]


def is_correct(answer_exact: str | None, gold: Fraction) -> bool:
    """Whether a solver's exact answer text equals the gold value."""
    if answer_exact is None:
        return False
    value = parse_number(answer_exact)
    return value is not None and value == gold


def accuracy(answers: list[str | None], golds: list[Fraction | None]) -> dict[str, Any]:
    """Accuracy over the problems that carry gold: ``{"accuracy", "correct", "with_gold"}``.

    ``accuracy`` is None when no problem carries gold.
    """
    pairs = [(a, g) for a, g in zip(answers, golds, strict=True) if g is not None]
    correct = sum(is_correct(a, g) for a, g in pairs)
    return {
        "accuracy": correct / len(pairs) if pairs else None,
        "correct": correct,
        "with_gold": len(pairs),
    }
