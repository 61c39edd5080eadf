"""A learned answer scorer: a log-linear model over each valid candidate's features,
optionally with one hidden ReLU layer added to its logit (features interact: a short
program is suspect when a longer candidate computes its answer on the way).

The default scorer ranks candidates by their mean step log-probability alone. The
verifier adds what the executed program itself shows (how many steps, how many of the
marked quantities it reads, whether it needs constants, whether an intermediate result
is fractional or negative, the answer's class and size) and what the other candidates
say (how many reach the same value). Its weights are fitted by `mycelium-train scorer`
on the search's own candidates for train problems (a candidate is positive when its
value is the gold answer) and stored in ``mycelium.json`` as ``answer_scorer``. Nothing
here reads the problem's words: every feature is a property of the candidate program or
a model's probability.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np

from mycelium.executor import ExecutionResult
from mycelium.executor.program import OPERATIONS

MAX_STEP_BUCKET = 5  # steps one-hot: 1, 2, ..., 5 or more

FEATURES: tuple[str, ...] = (
    "score",  # mean step log-probability (the default scorer's ranking)
    "min_step_logprob",
    "used_logprob",  # the segmenter's log-probability of the candidate's used set
    "score_gap",  # score minus the best valid candidate's score in the problem
    *(f"steps_{n}" for n in range(1, MAX_STEP_BUCKET + 1)),
    "template_tail",
    *(f"op_{op.lower()}" for op in OPERATIONS),  # share of the steps with this operation
    "quantities_unread",  # marked quantities the program never reads, as a fraction
    "needed_unread",  # sum of the segmenter's used-probabilities of the unread quantities
    "unneeded_read",  # sum of 1 - used-probability over the quantities read
    "quantity_reuse",  # quantity arguments beyond the first read of each
    "constants",  # constant arguments
    "fractional_intermediate",
    "negative_intermediate",
    "answer_fraction",
    "answer_negative",
    "answer_log_magnitude",
    "answer_is_quantity",  # the answer equals a marked quantity's value
    "value_support",  # log of the valid candidates reaching the same value
    "value_rank_support",  # log of the same-value candidates among the five best-scored
    "answer_is_other_intermediate",  # another candidate computes this value on its way
    "steps_below_longest",  # steps fewer than the longest valid candidate's
    # the classifier's word on the span-free group: log P(no learned step) for a candidate
    # without one, log P(a learned step) for one with (0 without a reject label)
    "tail_agreement",
    # the step log-probabilities taken apart (over the steps a model read; 0 without any):
    # the classifier's log P(the group is a step) (0 without a reject label), its log
    # P(the operation | a step), and the extractor's log P(the arguments)
    "is_step_mean",
    "is_step_min",
    "op_given_step_mean",
    "args_mean",
)


@dataclass(frozen=True)
class StepParts:
    """One step's log-probability taken apart: is the group a step, which operation (given
    a step), which arguments; the three add up to the step's log-probability."""

    is_step: float
    op_given_step: float
    args: float


@dataclass(frozen=True)
class CandidateInfo:
    """What the verifier reads of one valid candidate, besides its execution."""

    score: float
    step_logprobs: tuple[float, ...]
    used_logprob: float
    template_tail: bool
    tail_agreement: float = 0.0
    step_parts: tuple[StepParts, ...] = ()  # per model-read step (not a template tail's)


def log_one_minus_exp(logprob: float) -> float:
    """log(1 - exp(logprob)): the log-probability of the complement (floored at 1e-12)."""
    return math.log(max(-math.expm1(logprob), 1e-12))


def tail_agreement(no_learned_step: float | None, learned: bool) -> float:
    """Log-probability the classifier gives a candidate's choice of ending with a learned
    (span-free) step or not; 0 when the classifier has no reject label."""
    if no_learned_step is None:
        return 0.0
    return log_one_minus_exp(no_learned_step) if learned else no_learned_step


def candidate_features(
    info: CandidateInfo, result: ExecutionResult, quantities: Sequence[Fraction | None],
    used_probs: Sequence[float],
) -> dict[str, float]:
    """The features of one candidate that do not depend on the other candidates;
    ``used_probs``: the segmenter's probability that the solution uses each quantity."""
    assert result.value is not None
    steps = len(result.steps)
    reads: Counter[int] = Counter()
    constants = 0
    for trace in result.steps:
        for arg, _ in trace.args:
            if arg.kind == "quantity" and arg.index is not None:
                reads[arg.index] += 1
            elif arg.kind == "constant":
                constants += 1
    intermediates = [trace.result for trace in result.steps[:-1]]
    value = result.value
    quantity_count = len(quantities)
    features = {
        "score": info.score,
        "min_step_logprob": min(info.step_logprobs, default=0.0),
        "used_logprob": info.used_logprob,
        "template_tail": float(info.template_tail),
        "tail_agreement": info.tail_agreement,
        "quantities_unread": (quantity_count - len(reads)) / quantity_count
        if quantity_count else 0.0,
        "quantity_reuse": float(sum(reads.values()) - len(reads)),
        "needed_unread": sum(p for i, p in enumerate(used_probs) if i not in reads),
        "unneeded_read": sum(1 - used_probs[i] for i in reads if i < len(used_probs)),
        "constants": float(constants),
        "fractional_intermediate": float(any(v.denominator != 1 for v in intermediates)),
        "negative_intermediate": float(any(v < 0 for v in intermediates)),
        "answer_fraction": float(value.denominator != 1),
        "answer_negative": float(value < 0),
        "answer_log_magnitude": math.log10(1.0 + min(float(abs(value)), 1e12)),
        "answer_is_quantity": float(value in quantities),
        "steps": float(steps),
    }
    parts = info.step_parts
    features["is_step_mean"] = float(np.mean([s.is_step for s in parts])) if parts else 0.0
    features["is_step_min"] = min((s.is_step for s in parts), default=0.0)
    features["op_given_step_mean"] = (
        float(np.mean([s.op_given_step for s in parts])) if parts else 0.0)
    features["args_mean"] = float(np.mean([s.args for s in parts])) if parts else 0.0
    for n in range(1, MAX_STEP_BUCKET + 1):
        features[f"steps_{n}"] = float(min(steps, MAX_STEP_BUCKET) == n)
    ops = Counter(trace.op for trace in result.steps)
    for op in OPERATIONS:
        features[f"op_{op.lower()}"] = ops[op] / steps
    return features


def with_pool_features(
    rows: Sequence[dict[str, float]], results: Sequence[ExecutionResult]
) -> list[list[float]]:
    """Feature vectors (in :data:`FEATURES` order) once every candidate is known."""
    if not rows:
        return []
    values = [result.value for result in results]
    best = max(row["score"] for row in rows)
    longest = max(row["steps"] for row in rows)
    support = Counter(values)
    top = sorted(range(len(rows)), key=lambda i: -rows[i]["score"])[:5]
    top_support = Counter(values[i] for i in top)
    on_the_way: Counter[Fraction] = Counter()
    for result in results:
        on_the_way.update({trace.result for trace in result.steps[:-1]})
    out = []
    for row, value in zip(rows, values, strict=True):
        full = {
            **row,
            "score_gap": row["score"] - best,
            "value_support": math.log(support[value]),
            "value_rank_support": math.log(1 + top_support.get(value, 0)),
            "answer_is_other_intermediate": float(on_the_way.get(value, 0) > 0),
            "steps_below_longest": longest - row["steps"],
        }
        out.append([full[name] for name in FEATURES])
    return out


@dataclass(frozen=True)
class HiddenLayer:
    """The scorer's optional nonlinear part: ``out . relu(weights @ x + bias)`` over the
    standardized features, added to the linear logit."""

    weights: tuple[tuple[float, ...], ...]  # (units, features)
    bias: tuple[float, ...]
    out: tuple[float, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The hidden part's logit for each row of standardized features ``x`` (N, F)."""
        weights, bias, out = self._arrays
        return np.maximum(x @ weights.T + bias, 0.0) @ out

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(self.weights), np.asarray(self.bias), np.asarray(self.out)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``answer_scorer.hidden``)."""
        return {
            "weights": [[round(x, 6) for x in row] for row in self.weights],
            "bias": [round(x, 6) for x in self.bias],
            "out": [round(x, 6) for x in self.out],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], features: int) -> HiddenLayer:
        """Validate the stored form: one row of ``features`` weights, a bias and an output
        weight per unit."""
        weights = tuple(tuple(float(x) for x in row) for row in data["weights"])
        bias = tuple(float(x) for x in data["bias"])
        out = tuple(float(x) for x in data["out"])
        if not weights or any(len(row) != features for row in weights) or not (
                len(bias) == len(out) == len(weights)):
            raise ValueError(f"answer_scorer.hidden needs units x {features} weights and a "
                             "bias and an output weight per unit")
        return cls(weights, bias, out)


@dataclass(frozen=True)
class AnswerScorer:
    """Weights of the candidate model over standardized features: a linear logit, plus a
    one-layer ReLU part when ``hidden`` is set."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    hidden: HiddenLayer | None = None

    def logits(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        """One unnormalized log-probability per candidate (``vectors`` in :data:`FEATURES`
        order; the scorer reads its own features among them)."""
        if not vectors:
            return []
        mean, scale, weights = self._arrays
        x = (np.asarray(vectors, dtype=np.float64)[:, self._columns] - mean) / scale
        z = x @ weights
        if self.hidden is not None:
            z = z + self.hidden(x)
        return z.tolist()

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(self.mean), np.asarray(self.scale), np.asarray(self.weights)

    @cached_property
    def _columns(self) -> list[int]:
        """Where each of this scorer's features sits in a :data:`FEATURES` vector."""
        return [FEATURES.index(name) for name in self.features]

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored under ``answer_scorer`` in mycelium.json."""
        out: dict[str, Any] = {
            "features": list(self.features),
            "mean": [round(x, 6) for x in self.mean],
            "scale": [round(x, 6) for x in self.scale],
            "weights": [round(x, 6) for x in self.weights],
        }
        if self.hidden is not None:
            out["hidden"] = self.hidden.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnswerScorer:
        """Validate the stored form: known feature names, one number per feature."""
        names = tuple(str(name) for name in data["features"])
        unknown = sorted(set(names) - set(FEATURES))
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"answer_scorer features unknown to this runtime or repeated: "
                             f"{unknown or sorted(names)}")
        columns = [tuple(float(x) for x in data[key]) for key in ("mean", "scale", "weights")]
        if any(len(column) != len(names) for column in columns):
            raise ValueError("answer_scorer needs one mean, scale and weight per feature")
        if any(not s > 0 for s in columns[1]):
            raise ValueError("answer_scorer scales must be positive")
        hidden = data.get("hidden")
        return cls(names, *columns,
                   HiddenLayer.from_dict(hidden, len(names)) if hidden is not None else None)
