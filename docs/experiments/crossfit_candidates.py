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

from mycelium.runtime.diagnose import gold_value
from mycelium.runtime.solver import Solver
from mycelium.train.data import read_problems, split_of
from mycelium.train.scorer import ProblemCandidates, write_cache


def main(data: Path, trained_even: Path, trained_odd: Path, out: Path) -> None:
    rows = [(n, r["question"], gold_value(r)) for n, r in read_problems(data)
            if split_of(n) == "train" and gold_value(r) is not None]
    collected: list[ProblemCandidates] = []
    for artifacts, parity in ((trained_even, 1), (trained_odd, 0)):
        solver = Solver.load(artifacts)
        solver.spec = replace(solver.spec, answer_scorer=None)
        mine = [row for row in rows if (row[0] // 10) % 2 == parity]
        for start in range(0, len(mine), 16):
            chunk = mine[start:start + 16]
            results = solver.solve([q for _, q, _ in chunk], [n for n, _, _ in chunk],
                                   trace=True)
            for (number, _, gold), result in zip(chunk, results, strict=True):
                trace = result.trace or {}
                collected.append(ProblemCandidates(
                    number, trace.get("candidate_features", []),
                    trace.get("valid_values", []), gold))
        print(f"{artifacts}: {len(mine)} problems", flush=True)
    collected.sort(key=lambda p: p.id)
    write_cache(collected, out)


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:5]))
