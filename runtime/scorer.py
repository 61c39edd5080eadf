"""Pick the answer from valid candidates using model confidences alone."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from mycelium.executor import ExecutionResult

from .spec import answer_class

TEMPLATE_LOGPROB = math.log(0.2)  # prior of a bridging template step (no model scores it)


@dataclass
class Scored:
    """A valid executed candidate and its model score (mean step log-probability)."""

    score: float
    result: ExecutionResult
    candidate_index: int


def candidate_score(step_logprobs: list[float]) -> float:
    """Mean log-probability of a candidate's steps (comparable across lengths)."""
    return sum(step_logprobs) / len(step_logprobs) if step_logprobs else -math.inf


def pick_index(
    values: Sequence[Fraction], scores: Sequence[float],
    prior: Mapping[str, float] | None = None, temperature: float = 1.0,
) -> tuple[int, float]:
    """The winning value's best-scored candidate (its index) and the value's share.

    Candidates that reach the same value pool their probability; ``prior`` (log-probability
    per answer class) weighs each pool; ``temperature`` above 1 flattens the candidates'
    probabilities before pooling (closer to a vote). ``values`` must not be empty.
    """
    top = max(scores)
    pools: dict[Fraction, float] = {}
    best: dict[Fraction, int] = {}
    for index, (value, score) in enumerate(zip(values, scores, strict=True)):
        pools[value] = pools.get(value, 0.0) + math.exp((score - top) / temperature)
        if value not in best or score > scores[best[value]]:
            best[value] = index
    if prior:
        for value in pools:
            pools[value] *= math.exp(prior.get(answer_class(value), 0.0))
    winner = max(pools, key=lambda value: (pools[value], scores[best[value]]))
    return best[winner], pools[winner] / sum(pools.values())


def pick_answer(
    scored: list[Scored], prior: Mapping[str, float] | None = None, temperature: float = 1.0
) -> tuple[Scored | None, float]:
    """Best answer by summed candidate probability (:func:`pick_index`); returns its best
    candidate and confidence, the winning pool's share of all valid candidates' weighted
    probability."""
    if not scored:
        return None, 0.0
    values = []
    for item in scored:
        assert item.result.value is not None
        values.append(item.result.value)
    index, confidence = pick_index(values, [item.score for item in scored], prior, temperature)
    return scored[index], confidence
