"""Candidate groupings: enumerated, not learned.

The segmenter marks every quantity and says how likely the solution uses it.
The search takes a few *used sets* (the segmenter's reading, then the readings
with one uncertain span flipped), splits each used set, in text order, into
consecutive chunks of 1..``max_group_size`` spans (one step per chunk; with
``group_gap`` a chunk may skip up to that many spans inside, which later chunks
read: ``(Q0, Q2)`` then ``(Q1)``), and may
end a candidate with up to ``learned_steps`` tail steps that consume no new span
(learned: readings of the empty group) or with a bridging template. The chunks'
steps, and the learned steps, may run in any order (:func:`chunk_orders`, for at
most ``permute_chunks`` steps): a step reads earlier results by relative
reference, so the order decides which results it reads; :func:`references_ok`
drops orders whose references cannot resolve, or that leave a result unused,
before anything is executed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .spec import SearchSpec

Group = tuple[int, ...]  # global span indices, in text order; () = the tail group
MAX_COMPOSITIONS = 2048  # hard bound on enumeration work per used set
MIN_PROB = 1e-6


@dataclass(frozen=True)
class UsedSet:
    """Which spans the program consumes, with the segmenter's log-probability of that reading."""

    spans: tuple[int, ...]
    logprob: float


@dataclass(frozen=True)
class Candidate:
    """One grouping: the chunks in order, how it ends, and the used set it came from."""

    chunks: tuple[Group, ...]
    tail: str | None  # None, "LEARNED" (the empty group's steps) or a template name
    used_logprob: float = 0.0
    learned_steps: int = 1  # with tail "LEARNED": how many span-free steps end it


def used_sets(used_probs: Sequence[float], spec: SearchSpec) -> list[UsedSet]:
    """The segmenter's reading and up to ``spec.used_flips`` single-span flips of it."""
    probs = [min(max(p, MIN_PROB), 1 - MIN_PROB) for p in used_probs]
    base = [p >= 0.5 for p in probs]

    def reading(flags: list[bool]) -> UsedSet:
        chosen = tuple(i for i, flag in enumerate(flags) if flag)[: spec.max_spans]
        logprob = sum(math.log(p if f else 1 - p) for p, f in zip(probs, flags, strict=True))
        return UsedSet(chosen, logprob)

    out = [reading(base)]
    uncertain = sorted(range(len(probs)), key=lambda i: abs(probs[i] - 0.5))
    for index in uncertain[: spec.used_flips]:
        flags = list(base)
        flags[index] = not flags[index]
        candidate = reading(flags)
        if candidate.spans not in {u.spans for u in out}:
            out.append(candidate)
    return out


def windows(count: int, max_size: int, gap: int = 0) -> Iterator[tuple[int, ...]]:
    """Positions (of ``count`` used spans) of every group: runs of 1..``max_size``
    positions that skip at most ``gap`` positions inside (a skipped span belongs to
    another group: ``(0, 2)`` with span 1 in a group of its own)."""
    for start in range(count):
        for size in range(1, max_size + 1):
            for skip in range(0, gap + 1 if size > 1 else 1):
                extent = size + skip
                if start + extent > count:
                    break
                for skipped in itertools.combinations(range(start + 1, start + extent - 1),
                                                      skip):
                    yield tuple(p for p in range(start, start + extent) if p not in skipped)


def unique_groups(sets: Sequence[UsedSet], spec: SearchSpec) -> list[Group]:
    """Every group any candidate may use: windows over each used set, and ()."""
    groups: dict[Group, None] = {}
    for used in sets:
        chosen = used.spans
        for window in windows(len(chosen), spec.max_group_size, spec.group_gap):
            groups[tuple(chosen[p] for p in window)] = None
    groups[()] = None
    return list(groups)


def compositions(items: Sequence[int], max_part: int, gap: int = 0
                 ) -> Iterator[tuple[Group, ...]]:
    """Splits of ``items`` into groups of 1..``max_part`` items, each group a window of
    :func:`windows` (consecutive items, or with ``gap`` skipping up to that many inside),
    listed by their first items; at most MAX_COMPOSITIONS splits."""
    shapes = [w for w in windows(max_part + gap, max_part, gap) if w[0] == 0]

    def split(free: tuple[int, ...]) -> Iterator[tuple[Group, ...]]:
        if not free:
            yield ()
            return
        first, open_ = free[0], set(free)
        for shape in shapes:
            block = tuple(first + offset for offset in shape)
            if all(p in open_ for p in block):
                rest = tuple(p for p in free if p not in block)
                for tail in split(rest):
                    yield (tuple(items[p] for p in block), *tail)

    for produced, chunks in enumerate(split(tuple(range(len(items))))):
        if produced >= MAX_COMPOSITIONS:
            return
        yield chunks


def candidates(sets: Sequence[UsedSet], spec: SearchSpec) -> list[Candidate]:
    """All candidate groupings of a problem before scoring (bounded)."""
    out = []
    learned = range(1, spec.learned_steps + 1)
    for used in sets:
        if not used.spans:
            out.extend(Candidate((), "LEARNED", used.logprob, n) for n in learned)
            continue
        for chunks in compositions(used.spans, spec.max_group_size, spec.group_gap):
            out.append(Candidate(chunks, None, used.logprob))
            out.extend(Candidate(chunks, "LEARNED", used.logprob, n) for n in learned)
            if len(chunks) >= 2:
                out.extend(Candidate(chunks, name, used.logprob) for name in spec.tail_templates)
    return out


def chunk_orders(count: int, spec: SearchSpec) -> Iterator[tuple[int, ...]]:
    """Orders in which ``count`` steps (chunks in text order, then a learned step) may run:
    that order first, then (for at most ``spec.permute_chunks`` steps) every other
    permutation."""
    identity = tuple(range(count))
    yield identity
    if 1 < count <= spec.permute_chunks:
        for order in itertools.permutations(identity):
            if order != identity:
                yield order


def inversions(order: Sequence[int]) -> int:
    """Pairs of chunks that run out of text order."""
    return sum(1 for a, b in itertools.combinations(order, 2) if a > b)


def references_ok(
    refs: Sequence[Sequence[int]], template: str | None = None, connected: bool = True
) -> bool:
    """Whether steps with these relative result references (``R1`` = the previous step's
    result) can run: every reference resolves and, if ``connected``, every result but
    the last is used by a later step or by the ending ``template`` (which reads all
    results, or the last two for DERIVED_MUL)."""
    consumed: set[int] = set()
    for position, step_refs in enumerate(refs):
        for ref in step_refs:
            if not 1 <= ref <= position:
                return False
            consumed.add(position - ref)
    count = len(refs)
    if template is not None:
        first = max(count - 2, 0) if template == "DERIVED_MUL" else 0
        consumed.update(range(first, count))
        count += 1
    return not connected or all(k in consumed for k in range(count - 1))
