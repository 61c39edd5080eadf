"""Do two span-group classifiers, their probabilities averaged, read operations better than
one? (Experiment; train/README.md has the result.)

    python docs/experiments/classifier_ensemble.py ARTIFACTS OTHER_CLASSIFIER_ONNX SPLIT CACHE

Loads ARTIFACTS (span-group classifier), opens OTHER_CLASSIFIER_ONNX (same labels and
tokenizer), and serves the classifier as log(mean of the two softmaxes); collects the
SPLIT's candidates into CACHE (the `mycelium-train scorer --cache` format, so
`mycelium-train scorer --cache CACHE` and docs/experiments/paired_crossfit.py read it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mycelium.runtime.models import SpanGroupClassifierRunner
from mycelium.runtime.sessions import make_session
from mycelium.runtime.solver import Solver
from mycelium.train.scorer import collect, write_cache


class AveragedRunner(SpanGroupClassifierRunner):
    """Log of the mean probability of several span-group classifiers."""

    def __init__(self, runners: list[SpanGroupClassifierRunner]):
        super().__init__(runners[0].session, runners[0].pad_id)
        self.runners = runners

    def logits(self, rows):  # noqa: ANN001, ANN201 - the runner's own signature
        probs = []
        for runner in self.runners:
            z = runner.logits(rows).astype(np.float64)
            z = z - z.max(axis=-1, keepdims=True)
            p = np.exp(z)
            probs.append(p / p.sum(axis=-1, keepdims=True))
        return np.log(np.mean(probs, axis=0) + 1e-30).astype(np.float32)


def main(argv: list[str]) -> None:
    artifacts, other, split, cache = Path(argv[0]), Path(argv[1]), argv[2], Path(argv[3])
    solver = Solver.load(artifacts, "cpu")
    assert isinstance(solver.classifier, SpanGroupClassifierRunner)
    second = SpanGroupClassifierRunner(make_session(other, "cpu", None, None),
                                       solver.classifier.pad_id)
    solver.classifier = AveragedRunner([solver.classifier, second])
    problems = collect(solver, Path("../shared/data/gsm8k/train.jsonl"), split)
    write_cache(problems, cache)
    reach = sum(p.gold in p.values for p in problems)
    print(f"{len(problems)} problems, gold among the candidates of {reach}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
