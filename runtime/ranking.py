"""Best-first enumeration of (candidate grouping, readings) pairs by model score.

Each group has a few readings (operation + arguments) sorted by log-probability. A
candidate's score is the mean of its steps' log-probabilities (plus the used-set
reading's), so changing one step to its next reading never raises the score: the
combinations can be walked best first with a heap, and the walk stops as soon as
the executor has seen enough, without scoring every combination up front.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from .scorer import TEMPLATE_LOGPROB, candidate_score
from .search import Candidate


class Reading(Protocol):
    """What ranking needs of a reading: its log-probability."""

    logprob: float


R = TypeVar("R", bound=Reading)


@dataclass(frozen=True)
class Ranked(Generic[R]):
    """One candidate grouping with one reading per step, and its score."""

    score: float
    index: int  # the candidate's index in enumeration order (ties: the earlier first)
    candidate: Candidate
    readings: list[R]  # chunk steps in text order, then the learned tail's


def steps_of(candidate: Candidate) -> list[tuple[int, ...]]:
    """The groups whose readings a candidate needs: its chunks, then () per learned step."""
    if candidate.tail != "LEARNED":
        return list(candidate.chunks)
    return [*candidate.chunks, *[()] * candidate.learned_steps]


def best_first(
    candidates: Sequence[Candidate], options: dict[tuple[int, ...], list[R]]
) -> Iterator[Ranked[R]]:
    """Every (candidate, reading combination) in non-increasing score order.

    ``options[group]``: the group's readings, best first. Candidates with a group that
    has no reading are skipped.
    """
    heap: list[tuple[float, int, tuple[int, ...]]] = []
    table: dict[int, tuple[Candidate, list[list[R]], list[float]]] = {}
    for index, cand in enumerate(candidates):
        lists = [options.get(group) or [] for group in steps_of(cand)]
        if any(not found for found in lists):
            continue
        extra = [cand.used_logprob]
        if cand.tail not in (None, "LEARNED"):
            extra.append(TEMPLATE_LOGPROB)
        table[index] = (cand, lists, extra)  # type: ignore[assignment]
        choice = (0,) * len(lists)
        heap.append((-_score(lists, choice, extra), index, choice))
    heapq.heapify(heap)
    seen: set[tuple[int, tuple[int, ...]]] = set()
    while heap:
        negative, index, choice = heapq.heappop(heap)
        cand, lists, extra = table[index]
        yield Ranked(-negative, index, cand, [lists[i][c] for i, c in enumerate(choice)])
        for i, c in enumerate(choice):
            if c + 1 < len(lists[i]):
                successor = (*choice[:i], c + 1, *choice[i + 1:])
                if (index, successor) not in seen:
                    seen.add((index, successor))
                    score = _score(lists, successor, extra)
                    heapq.heappush(heap, (-score, index, successor))


def _score(lists: list[list[R]], choice: tuple[int, ...], extra: list[float]) -> float:
    return candidate_score([*(lists[i][c].logprob for i, c in enumerate(choice)), *extra])
