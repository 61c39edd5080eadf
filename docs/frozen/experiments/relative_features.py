"""Does the scorer pick better when each feature also comes as its distance to the
problem's best candidate on that feature? (Experiment; train/README.md has the result.)

    python docs/experiments/relative_features.py TRAIN_CACHE DEV_CACHE [--folds K]

The shipped scorer's ReLU units see one candidate at a time; only the softmax compares
candidates. Here every candidate's row is its 34 features and, per feature, ``x - max``
over the problem's candidates, fitted the shipped way (``train.scorer.fit``'s objective
and optimizer, ``--hidden 32 --members 4 --l2 0.01``) by temporarily widening the rows.
Reports dev picks (a fit on all of train) and, with ``--folds K``, K-fold cross-fitted
train picks, each paired with the shipped form on the same candidates.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import mycelium.train.scorer as scorer_module
from mycelium.runtime.verifier import FEATURES
from mycelium.train.scorer import ProblemCandidates, fit, picked, read_cache

sys.path.insert(0, str(Path(__file__).parent))
from paired_crossfit import (  # noqa: E402 - shared with it
    SHIPPED,
    print_paired,
    shipped_dev_right,
    shipped_held_out,
)

WIDE = (*FEATURES, *(f"{name}_below_best" for name in FEATURES))


def with_distance_to_best(vectors: list[list[float]]) -> np.ndarray:
    """The candidates' feature rows, each followed by its distance to the problem's
    column maxima (``x - max``)."""
    x = np.asarray(vectors, dtype=np.float64)
    return np.concatenate([x, x - x.max(axis=0, keepdims=True)], axis=1)


def widened(problem: ProblemCandidates) -> ProblemCandidates:
    """The problem with its rows widened by :func:`with_distance_to_best`."""
    if not problem.vectors:
        return problem
    return replace(problem, vectors=with_distance_to_best(problem.vectors).tolist())


def fit_wide(problems: list[ProblemCandidates]):  # noqa: ANN201 - an AnswerScorer
    """``fit`` over the widened rows (the module's feature list widened meanwhile)."""
    original = scorer_module.FEATURES
    scorer_module.FEATURES = WIDE
    try:
        return fit([widened(p) for p in problems], **SHIPPED)
    finally:
        scorer_module.FEATURES = original


def right_under(model, problem: ProblemCandidates) -> bool:  # noqa: ANN001
    """Whether the widened scorer's logits pick the gold value."""
    if not problem.values:
        return False
    mean, scale, weights = (np.asarray(v) for v in (model.mean, model.scale, model.weights))
    x = (with_distance_to_best(problem.vectors) - mean) / scale
    z = x @ weights + (model.hidden(x) if model.hidden is not None else 0.0)
    return picked(problem, list(z)) == problem.gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("dev", type=Path)
    parser.add_argument("--folds", type=int, default=0)
    args = parser.parse_args()
    train, dev = read_cache(args.train), read_cache(args.dev)

    model = fit_wide(train)
    print_paired("dev", "widened", [right_under(model, p) for p in dev],
                 shipped_dev_right(train, dev))
    if args.folds:
        wide_right = [False] * len(train)
        for fold in range(args.folds):
            model = fit_wide([p for k, p in enumerate(train) if k % args.folds != fold])
            for k in range(fold, len(train), args.folds):
                wide_right[k] = right_under(model, train[k])
        print_paired(f"train {args.folds}-fold cross-fitted", "widened", wide_right,
                     shipped_held_out(args.train, train, args.folds))


if __name__ == "__main__":
    main()
