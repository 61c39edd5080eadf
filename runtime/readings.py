"""From classifier scores to model readings: which operations each span group is read
with (the reject label and the pruning), and the (operation, arguments) readings the
extractor gives them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from mycelium.executor import Arg, canonical_args

from .classify import GroupRow
from .extract import ExtractRow
from .grammar import parse_args
from .spec import REJECT, SearchSpec, group_breadth
from .trace import Variant  # the reading type (defined with the trace, as is Readings)
from .verifier import log_one_minus_exp


class ReadingKey(NamedTuple):
    """Where an extractor row's readings go, and the classifier's part of their score."""

    problem: int
    group: tuple[int, ...]
    op: str
    op_logprob: float  # log P(op), the reject label's mass included
    is_step_logprob: float  # log P(the group is a step); 0 without a reject label


@dataclass
class ExtractionPlan:
    """The extractor rows of a batch, grouped by their first-token branches (the span-free
    group may read wider), and each problem's log P(the span-free group is no step)."""

    rows: dict[int, list[tuple[ExtractRow, ReadingKey]]] = field(default_factory=dict)
    no_learned_step: list[float | None] = field(default_factory=list)


def ranked_operations(op_scores: np.ndarray, operations: Sequence[str]
                      ) -> tuple[np.ndarray, int]:
    """Each row's operations best first, the reject label never among the first; and how
    many real operations there are. A rejected group keeps its low operation scores."""
    real = [i for i, op in enumerate(operations) if op != REJECT]
    choosable = np.full_like(op_scores, -np.inf)
    choosable[:, real] = op_scores[:, real]
    return np.argsort(-choosable, axis=1), len(real)


def kept_operations(scores: np.ndarray, ranked: np.ndarray, count: int,
                    min_op_logprob: float) -> list[int]:
    """The first ``count`` ranked operations of a group, less those (after the best) below
    ``min_op_logprob``: pruned by the classifier before the extractor runs."""
    return [int(op_index) for rank, op_index in enumerate(ranked[:count])
            if not (rank and scores[op_index] < min_op_logprob)]


def plan_extractions(op_scores: np.ndarray, operations: Sequence[str],
                     groups: Sequence[Sequence[tuple[int, ...]]], rows: Sequence[GroupRow],
                     search: SearchSpec) -> ExtractionPlan:
    """The (group, operation) rows the extractor reads: each group's top
    ``ops_per_group`` operations (see :func:`kept_operations`); ``op_scores`` has one row
    per group of ``groups`` (problem by problem), matching ``rows``."""
    ranked, real = ranked_operations(op_scores, operations)
    min_op_logprob = math.log(max(search.min_op_prob, 1e-12))
    reject = operations.index(REJECT) if REJECT in operations else None
    plan = ExtractionPlan(no_learned_step=[None] * len(groups))
    flat = 0
    for p, problem_groups in enumerate(groups):
        for group in problem_groups:
            is_step = 0.0
            if reject is not None:
                if not group:  # P(the program has no such step)
                    plan.no_learned_step[p] = float(op_scores[flat, reject])
                is_step = log_one_minus_exp(float(op_scores[flat, reject]))
            ops, branches, _ = group_breadth(search, group)
            count = max(1, min(ops, real))
            for op_index in kept_operations(op_scores[flat], ranked[flat], count,
                                            min_op_logprob):
                op = operations[op_index]
                plan.rows.setdefault(branches, []).append((
                    (p, rows[flat][1], op),
                    ReadingKey(p, group, op, float(op_scores[flat, op_index]), is_step)))
            flat += 1
    return plan


def add_readings(variants: Sequence[dict[tuple[int, ...], list[Variant]]],
                 keys: Iterable[ReadingKey],
                 extractions: Iterable[list[tuple[str, float]]]) -> None:
    """Append each extractor reading (argument text, its log-probability) to its
    problem's group as a :class:`Variant` scored by operation and arguments together."""
    for key, found in zip(keys, extractions, strict=True):
        for text, args_lp in found:
            variants[key.problem][key.group].append(Variant(
                key.op, parse_args(text), key.op_logprob + args_lp, text,
                key.is_step_logprob, key.op_logprob - key.is_step_logprob))


def distinct_readings(found: Iterable[Variant]) -> list[Variant]:
    """The parsed readings, best first, one per program step: a reading that only reorders
    a commutative operation's arguments (``MUL Q1 Q0`` after ``MUL Q0 Q1``) is dropped, so
    it does not take the place of a reading with another value."""
    seen: set[tuple[str, tuple[Arg, ...]]] = set()
    out = []
    for variant in sorted((v for v in found if v.args is not None), key=lambda v: -v.logprob):
        key = (variant.op, canonical_args(variant.op, variant.args or ()))
        if key not in seen:
            seen.add(key)
            out.append(variant)
    return out
