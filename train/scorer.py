"""`mycelium-train scorer`: fit the learned answer scorer on the search's own candidates.

The solver runs (no gold given) on a split's problems and keeps every valid candidate's
feature vector (:mod:`mycelium.runtime.verifier`) and value. A candidate is positive when
its value is the gold answer. The model is a conditional logit: a softmax over a
problem's candidates whose gold-valued ones should carry the mass (their probabilities
pool, as at serving time). Fitted with Adam and an L2 penalty in numpy; no torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mycelium.executor import format_fraction
from mycelium.executor.numbers import parse_number
from mycelium.runtime.diagnose import gold_value
from mycelium.runtime.results import SolveTrace
from mycelium.runtime.scorer import pick_index
from mycelium.runtime.verifier import FEATURES, AnswerScorer, HiddenLayer

from .data import read_problems, split_of
from .program_text import render_program


@dataclass
class ProblemCandidates:
    """One problem's valid candidates: feature vectors, values, and the gold answer."""

    id: int
    vectors: list[list[float]]
    values: list[Fraction]
    gold: Fraction
    programs: list[str] = field(default_factory=list)  # `render_program` text per candidate

    def to_record(self) -> dict[str, Any]:
        """JSONL form of the candidate cache."""
        record = {
            "id": self.id,
            "gold": format_fraction(self.gold),
            "values": [format_fraction(v) for v in self.values],
            "vectors": [[round(x, 6) for x in vector] for vector in self.vectors],
        }
        if self.programs:
            record["programs"] = self.programs
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ProblemCandidates:
        """Read one cached record (values in exact form)."""
        values = [parse_number(text) for text in record["values"]]
        gold = parse_number(record["gold"])
        if gold is None or any(v is None for v in values):
            raise ValueError(f"candidate cache record {record.get('id')!r}: unreadable value")
        widths = {len(vector) for vector in record["vectors"]}
        if widths - {len(FEATURES)}:
            raise ValueError(
                f"candidate cache record {record.get('id')!r}: vectors of {sorted(widths)} "
                f"features where this runtime computes {len(FEATURES)} (a cache from another "
                "version: delete it to collect again)")
        return cls(int(record["id"]), record["vectors"], values, gold,  # type: ignore[arg-type]
                   list(record.get("programs", [])))


def collect(
    solver: Any, path: Path, split: str, batch_size: int = 16, limit: int | None = None,
    log: Callable[[str], None] = print, keep: Callable[[int], bool] | None = None,
) -> list[ProblemCandidates]:
    """Solve ``split``'s problems of a GSM8K jsonl (those whose 0-based line number
    ``keep`` accepts, if given) and keep their valid candidates."""
    rows = []
    for number, record in read_problems(path):
        gold = gold_value(record)
        if split_of(number) == split and gold is not None and (keep is None or keep(number)):
            rows.append((number, record["question"], gold))
    rows = rows[:limit] if limit is not None else rows
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        results = solver.solve([q for _, q, _ in chunk], [n for n, _, _ in chunk], trace=True)
        for (number, _, gold), result in zip(chunk, results, strict=True):
            trace = result.trace if result.trace is not None else SolveTrace()
            out.append(ProblemCandidates(
                number, trace.candidate_features, trace.valid_values, gold,
                [render_program(p) for p in trace.candidate_programs],
            ))
        if (start // batch_size) % 50 == 0:
            log(f"solved {start + len(chunk)}/{len(rows)}")
    return out


def write_cache(problems: Iterable[ProblemCandidates], path: Path) -> None:
    """Write the candidate cache (one JSON line per problem)."""
    with path.open("w", encoding="utf-8") as handle:
        for problem in problems:
            handle.write(json.dumps(problem.to_record()) + "\n")


def read_cache(path: Path) -> list[ProblemCandidates]:
    """Read a candidate cache written by :func:`write_cache`."""
    problems = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                problems.append(ProblemCandidates.from_record(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}: line {number} is no candidate record ({exc})") from None
    return problems


@dataclass
class _Batch:
    x: np.ndarray  # (N, F) every candidate of every problem
    positive: np.ndarray  # (N,) bool
    starts: np.ndarray  # (P,) first row of each problem


def _stack(problems: Sequence[ProblemCandidates]) -> _Batch:
    """The problems with at least one gold-valued and one other candidate."""
    kept = [p for p in problems
            if any(v == p.gold for v in p.values) and any(v != p.gold for v in p.values)]
    if not kept:
        raise ValueError("no problem has both a gold-valued and another valid candidate")
    x = np.array([vector for p in kept for vector in p.vectors], dtype=np.float64)
    positive = np.array([v == p.gold for p in kept for v in p.values])
    sizes = np.array([len(p.values) for p in kept])
    return _Batch(x, positive, np.concatenate([[0], np.cumsum(sizes)[:-1]]))


def _segment_logsumexp(z: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem logsumexp of ``z`` and each row's softmax within its problem."""
    index = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(z))))
    top = np.maximum.reduceat(z, starts)
    shifted = np.exp(z - top[index])
    total = np.add.reduceat(shifted, starts)
    return top + np.log(total), shifted / total[index]


def _adam(params: list[np.ndarray], lr: float) -> Callable[[list[np.ndarray]], None]:
    """An Adam step closure over ``params`` (updated in place)."""
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    t = 0

    def step(grads: list[np.ndarray]) -> None:
        nonlocal t
        t += 1
        for param, grad, (m, v) in zip(params, grads, moments, strict=True):
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad**2
            param -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)

    return step


def fit(
    problems: Sequence[ProblemCandidates], l2: float = 1e-3, steps: int | None = None,
    lr: float = 0.05, hidden: int = 0, seed: int = 0, members: int = 1,
) -> AnswerScorer:
    """Fit the conditional logit: maximize log P(the gold value) per problem.

    ``hidden`` > 0 adds that many ReLU units whose output joins the linear logit (started
    small and random from ``seed``; the linear part starts from the default ranking);
    ``members`` > 1 fits that many from seeds ``seed``, ``seed + 1``, ... and averages them
    (:func:`average`).
    Full-batch Adam (``steps``: 600 for the linear model, 1,500 with hidden units, at a
    fifth of the learning rate); the L2 penalty covers every weight but the biases."""
    if members > 1 and hidden:
        return average([fit(problems, l2, steps, lr, hidden, seed + k) for k in range(members)])
    steps = steps if steps is not None else (1500 if hidden else 600)
    batch = _stack(problems)
    mean = batch.x.mean(axis=0)
    scale = batch.x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = (batch.x - mean) / scale
    w = np.zeros(x.shape[1])
    w[FEATURES.index("score")] = 1.0  # start from the default ranking
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0.0, 1.0 / np.sqrt(x.shape[1]), (hidden, x.shape[1]))
    b1 = np.zeros(hidden)
    out = rng.normal(0.0, 0.01, hidden)
    params = [w, w1, b1, out] if hidden else [w]
    step = _adam(params, lr if not hidden else lr / 5)
    problems_count = len(batch.starts)
    neg_inf = np.full(len(x), -np.inf)
    for _ in range(steps):
        h = np.maximum(x @ w1.T + b1, 0.0)
        z = x @ w + h @ out
        _, p_all = _segment_logsumexp(z, batch.starts)
        _, p_pos = _segment_logsumexp(np.where(batch.positive, z, neg_inf), batch.starts)
        g = -(p_pos - p_all) / problems_count  # d loss / d z
        grads = [x.T @ g + l2 * w]
        if hidden:
            dh = (g[:, None] * out[None, :]) * (h > 0)
            grads += [dh.T @ x + l2 * w1, dh.sum(axis=0), h.T @ g + l2 * out]
        step(grads)
    layer = (HiddenLayer(tuple(tuple(row) for row in w1.tolist()), tuple(b1.tolist()),
                         tuple(out.tolist())) if hidden else None)
    return AnswerScorer(FEATURES, tuple(mean.tolist()), tuple(scale.tolist()),
                        tuple(w.tolist()), layer)


def average(scorers: Sequence[AnswerScorer]) -> AnswerScorer:
    """One scorer whose logit is the mean of ``scorers``' logits (fitted on the same
    problems, so they share the standardization): the linear weights averaged, the hidden
    units side by side with their output weights divided by the count."""
    first, count = scorers[0], len(scorers)
    if any(s.features != first.features or s.mean != first.mean or s.scale != first.scale
           or s.hidden is None for s in scorers):
        raise ValueError("only scorers with hidden units fitted on the same problems average")
    layers = [s.hidden for s in scorers if s.hidden is not None]
    return AnswerScorer(
        first.features, first.mean, first.scale,
        tuple(np.mean([s.weights for s in scorers], axis=0).tolist()),
        HiddenLayer(tuple(row for layer in layers for row in layer.weights),
                    tuple(b for layer in layers for b in layer.bias),
                    tuple(o / count for layer in layers for o in layer.out)))


def picked(
    problem: ProblemCandidates, scores: Sequence[float],
    prior: Mapping[str, float] | None = None, temperature: float = 1.0,
) -> Fraction | None:
    """The value the runtime would answer under ``scores`` (``runtime.scorer.pick_index``)."""
    if not problem.values:
        return None
    return problem.values[pick_index(problem.values, scores, prior, temperature)[0]]


def _default_pick(
    problem: ProblemCandidates, prior: Mapping[str, float] | None, temperature: float
) -> Fraction | None:
    """The default ranking's answer: mean step log-probability, prior and temperature."""
    column = FEATURES.index("score")
    return picked(problem, [vector[column] for vector in problem.vectors], prior, temperature)


def pick_accuracy(
    problems: Sequence[ProblemCandidates], scorer: AnswerScorer | None,
    prior: Mapping[str, float] | None = None, temperature: float = 1.0,
) -> dict[str, int]:
    """How many problems the scorer answers right, and how many had the gold in reach.

    ``scorer`` None: the default ranking, with the artifacts' ``prior`` and ``temperature``."""
    right = reachable = 0
    for problem in problems:
        if not problem.values:
            continue
        answer = (picked(problem, scorer.logits(problem.vectors)) if scorer is not None
                  else _default_pick(problem, prior, temperature))
        right += answer == problem.gold
        reachable += problem.gold in problem.values
    return {"problems": len(problems), "gold_among_candidates": reachable, "picked": right}


def held_out_logits(
    problems: Sequence[ProblemCandidates], folds: int, l2: float, hidden: int = 0,
    members: int = 1,
) -> list[list[float]]:
    """Per problem (in order): its candidates' logits under a scorer fitted on the other
    ``folds`` - 1 folds (problem ``k`` is in fold ``k % folds``)."""
    out: list[list[float]] = [[] for _ in problems]
    for fold in range(folds):
        scorer = fit([p for k, p in enumerate(problems) if k % folds != fold], l2=l2,
                     hidden=hidden, members=members)
        for k in range(fold, len(problems), folds):
            out[k] = scorer.logits(problems[k].vectors)
    return out


def held_out_right(
    problems: Sequence[ProblemCandidates], folds: int, l2: float, hidden: int = 0,
    members: int = 1, logits: Sequence[Sequence[float]] | None = None,
) -> list[bool]:
    """Per problem (in order): whether a scorer fitted on the other ``folds`` - 1 folds
    picks its gold value (``logits``: :func:`held_out_logits`, when already computed)."""
    if logits is None:
        logits = held_out_logits(problems, folds, l2, hidden, members)
    return [bool(problem.values) and picked(problem, z) == problem.gold
            for problem, z in zip(problems, logits, strict=True)]


def cross_fit(
    problems: Sequence[ProblemCandidates], folds: int, l2: float,
    prior: Mapping[str, float] | None = None, temperature: float = 1.0, hidden: int = 0,
    members: int = 1, logits: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Each fold answered by a scorer fitted on the other folds, paired with the default
    (``logits``: the held-out logits, when already computed).

    Every problem is answered by a scorer that never saw it, so this measures the
    learned scorer on the whole fit split (with an exact McNemar p against the default)."""
    from mycelium.runtime.compare import mcnemar_p

    default_right = learned_right = gained = lost = 0
    learned = held_out_right(problems, folds, l2, hidden, members, logits)
    for problem, now in zip(problems, learned, strict=True):
        if not problem.values:
            continue
        was = _default_pick(problem, prior, temperature) == problem.gold
        default_right += was
        learned_right += now
        gained += now and not was
        lost += was and not now
    return {"folds": folds, "default": default_right, "learned": learned_right,
            "gained": gained, "lost": lost, "mcnemar_p": float(f"{mcnemar_p(gained, lost):.3g}")}
