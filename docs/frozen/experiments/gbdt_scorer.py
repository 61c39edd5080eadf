"""Do gradient-boosted trees over the candidates' features pick better than the shipped
scorer's ReLU layer? (Experiment; train/README.md has the result.)

    python docs/experiments/gbdt_scorer.py TRAIN_CACHE DEV_CACHE [--iterations N]

Reads two `mycelium-train scorer --cache` files. Each candidate's row is its features
and, per feature, its distance to the problem's best value of that feature (trees split
on one feature at a time and cannot compare candidates otherwise); a pointwise
``HistGradientBoostingClassifier`` learns "this candidate's value is the gold answer", its
log-odds is the candidate's score, and the runtime's own pooling (``pick_index``) picks
the value. Reports 5-fold cross-fitted picks on train (problem k in fold k % 5, as
``mycelium-train scorer --folds 5``) and the dev picks of a fit on all of train, each
next to the shipped form's (``--hidden 32 --members 4 --l2 0.01``) on the same
candidates, paired per problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from mycelium.train.scorer import ProblemCandidates, picked, read_cache

sys.path.insert(0, str(Path(__file__).parent))
from paired_crossfit import print_paired, shipped_dev_right, shipped_held_out  # noqa: E402
from relative_features import with_distance_to_best  # noqa: E402

FOLDS = 5


def stacked(problems: list[ProblemCandidates]) -> tuple[np.ndarray, np.ndarray]:
    """All candidate rows and their labels (value == gold)."""
    kept = [p for p in problems if p.values]
    x = np.concatenate([with_distance_to_best(p.vectors) for p in kept])
    y = np.concatenate([[v == p.gold for v in p.values] for p in kept]).astype(int)
    return x, y


def trees(problems: list[ProblemCandidates], iterations: int,
          seed: int) -> HistGradientBoostingClassifier:
    """Pointwise boosted trees over the candidate rows."""
    x, y = stacked(problems)
    model = HistGradientBoostingClassifier(max_iter=iterations, learning_rate=0.05,
                                           max_leaf_nodes=31, l2_regularization=1.0,
                                           random_state=seed)
    return model.fit(x, y)


def right(model: HistGradientBoostingClassifier, problem: ProblemCandidates) -> bool:
    """Whether the trees' scores pick the problem's gold value."""
    if not problem.values:
        return False
    scores = model.decision_function(with_distance_to_best(problem.vectors))
    return picked(problem, list(scores)) == problem.gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("dev", type=Path)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    train, dev = read_cache(args.train), read_cache(args.dev)

    trees_right = [False] * len(train)
    for fold in range(FOLDS):
        model = trees([p for k, p in enumerate(train) if k % FOLDS != fold], args.iterations,
                      fold)
        for k in range(fold, len(train), FOLDS):
            trees_right[k] = right(model, train[k])
    print_paired("train 5-fold cross-fitted", "trees", trees_right,
                 shipped_held_out(args.train, train, FOLDS))

    model = trees(train, args.iterations, 0)
    print_paired("dev", "trees", [right(model, p) for p in dev], shipped_dev_right(train, dev))


if __name__ == "__main__":
    main()
