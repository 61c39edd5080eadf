"""The scorer: pooled candidate probability, weighed by the learned answer prior."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from mycelium.executor import ExecutionResult
from mycelium.runtime.errors import ArtifactsError
from mycelium.runtime.scorer import Scored, pick_answer
from mycelium.runtime.spec import (
    DEFAULT_ANSWER_PRIOR,
    SolverSpec,
    answer_class,
    fit_answer_prior,
)


def _scored(value: Fraction, score: float, index: int = 0) -> Scored:
    return Scored(score, ExecutionResult(True, value, [], None), index)


def test_pools_agreeing_candidates() -> None:
    items = [_scored(Fraction(5), -1.0), _scored(Fraction(5), -1.1, 1), _scored(Fraction(7), -0.8)]
    best, confidence = pick_answer(items)
    assert best.result.value == 5 and best.score == -1.0
    expected = (math.exp(-0.2) + math.exp(-0.3)) / (1 + math.exp(-0.2) + math.exp(-0.3))
    assert math.isclose(confidence, expected)
    assert pick_answer([]) == (None, 0.0)


def test_prior_prefers_integer_answers_over_better_scored_fractions() -> None:
    items = [_scored(Fraction(7, 2), -0.5), _scored(Fraction(3), -2.0)]
    assert pick_answer(items)[0].result.value == Fraction(7, 2)
    best, confidence = pick_answer(items, DEFAULT_ANSWER_PRIOR)
    assert best.result.value == 3 and confidence > 0.99
    # a fraction still wins when nothing else is valid
    assert pick_answer(items[:1], DEFAULT_ANSWER_PRIOR)[0].result.value == Fraction(7, 2)


def test_answer_prior_is_fitted_and_validated() -> None:
    answers = [Fraction(4)] * 6722 + [Fraction(-1)] * 3
    assert fit_answer_prior(answers) == DEFAULT_ANSWER_PRIOR
    assert [answer_class(Fraction(x)) for x in ("0", "-2", "1/2")] == [
        "nonnegative_integer", "negative_integer", "fraction"]
    spec = SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_prior": {
        "nonnegative_integer": -0.1, "negative_integer": -2, "fraction": -3}})
    assert spec.answer_prior["fraction"] == -3.0
    with pytest.raises(ArtifactsError, match="answer_prior"):
        SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_prior": {"fraction": -1}})


def test_pool_temperature_moves_towards_a_vote() -> None:
    # one strong candidate for 5 against three weaker ones agreeing on 7
    items = [_scored(Fraction(5), -0.1), *(_scored(Fraction(7), -2.0, i) for i in (1, 2, 3))]
    assert pick_answer(items)[0].result.value == 5  # exp(-1.9) * 3 < 1
    assert pick_answer(items, temperature=2.0)[0].result.value == 7  # exp(-0.95) * 3 > 1
