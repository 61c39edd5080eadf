"""Best-first enumeration of candidate groupings with several readings per group."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.runtime.ranking import best_first, steps_of
from mycelium.runtime.scorer import TEMPLATE_LOGPROB, candidate_score
from mycelium.runtime.search import Candidate


@dataclass
class R:
    logprob: float
    name: str = ""


def _brute(candidates, options):
    out = []
    for index, cand in enumerate(candidates):
        lists = [options.get(g) for g in steps_of(cand)]
        if any(not x for x in lists):
            continue
        for combo in itertools.product(*lists):
            extra = [cand.used_logprob]
            if cand.tail not in (None, "LEARNED"):
                extra.append(TEMPLATE_LOGPROB)
            out.append((candidate_score([*(r.logprob for r in combo), *extra]), index, combo))
    return out


def test_skips_candidates_without_readings_and_learned_tail_uses_the_empty_group() -> None:
    options = {(0,): [R(-0.1, "a"), R(-1.0, "b")], (): [R(-0.5, "t")]}
    cands = [Candidate(((0,),), None), Candidate(((0,), (1,)), None), Candidate(((0,),), "LEARNED")]
    ranked = list(best_first(cands, options))
    assert [r.index for r in ranked] == [0, 2, 0, 2]
    assert [x.name for x in ranked[1].readings] == ["a", "t"]
    assert math.isclose(ranked[0].score, candidate_score([-0.1, 0.0]))


logprobs = st.lists(st.floats(-8, 0), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(st.lists(logprobs, min_size=1, max_size=4), st.integers(0, 3))
def test_best_first_is_sorted_and_complete(group_lps, seed) -> None:
    options = {(i,): sorted((R(x) for x in lps), key=lambda r: -r.logprob)
               for i, lps in enumerate(group_lps)}
    groups = list(options)
    cands = [Candidate(tuple(groups[: k + 1]), tail, -0.1 * seed)
             for k in range(len(groups)) for tail in (None, "ACC_ADD")]
    ranked = list(best_first(cands, options))
    scores = [r.score for r in ranked]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(scores))
    brute = _brute(cands, options)
    assert len(ranked) == len(brute)
    assert sorted(scores) == sorted(s for s, _, _ in brute)
