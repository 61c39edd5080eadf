"""Collect answer-scorer candidates for train problems with specialists that never saw them.

Experiment (train/README.md, "Cross-fitted candidates for the scorer"): the extractor is
trained twice, each time on half of the train problems (blocks of ten lines, ``id // 10``
even or odd); each half's candidates come from the artifacts whose extractor did not read
it. The union is a candidate cache for ``mycelium-train scorer --cache``.

    python docs/experiments/crossfit_candidates.py GSM8K.jsonl ART_EVEN ART_ODD OUT.jsonl

ART_EVEN: artifacts whose extractor trained on the even blocks (it answers the odd ones).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from mycelium.runtime.solver import Solver
from mycelium.train.scorer import ProblemCandidates, collect, write_cache


def main(data: Path, trained_even: Path, trained_odd: Path, out: Path) -> None:
    collected: list[ProblemCandidates] = []
    for artifacts, parity in ((trained_even, 1), (trained_odd, 0)):
        solver = Solver.load(artifacts)
        solver.spec = replace(solver.spec, answer_scorer=None)  # the default ranking
        collected += collect(solver, data, "train", log=lambda _: None,
                             keep=lambda number, parity=parity: (number // 10) % 2 == parity)
        print(f"{artifacts}: {len(collected)} problems so far", flush=True)
    collected.sort(key=lambda p: p.id)
    write_cache(collected, out)


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:5]))
