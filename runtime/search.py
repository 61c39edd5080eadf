"""Candidate groupings: enumerated, not learned.

A problem's quantity spans (in text order) are split into consecutive chunks of
1..``max_group_size`` spans; each chunk becomes one step whose operation and
arguments the specialists supply. A candidate may end with a tail step that
consumes no new span (learned: the empty group) or with a bridging template.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .spec import SearchSpec

Group = tuple[int, ...]  # span indices, consecutive, in text order; () = the tail group
MAX_COMPOSITIONS = 2048  # hard bound on enumeration work per problem


@dataclass(frozen=True)
class Candidate:
    """One grouping: the chunks in order, and how it ends."""

    chunks: tuple[Group, ...]
    tail: str | None  # None, "LEARNED" (the empty group's step) or a template name


def unique_groups(num_spans: int, spec: SearchSpec) -> list[Group]:
    """Every group any candidate may use: windows of 1..max_group_size spans, and ()."""
    count = min(num_spans, spec.max_spans)
    groups: list[Group] = [
        tuple(range(start, start + size))
        for start in range(count)
        for size in range(1, spec.max_group_size + 1)
        if start + size <= count
    ]
    return [*groups, ()]


def compositions(num_spans: int, max_part: int) -> Iterator[tuple[Group, ...]]:
    """Splits of spans 0..n-1 into consecutive chunks (at most MAX_COMPOSITIONS)."""
    produced = 0

    def split(start: int) -> Iterator[tuple[Group, ...]]:
        if start == num_spans:
            yield ()
            return
        for size in range(1, max_part + 1):
            if start + size > num_spans:
                break
            head = tuple(range(start, start + size))
            for rest in split(start + size):
                yield (head, *rest)

    for chunks in split(0):
        if produced >= MAX_COMPOSITIONS:
            return
        produced += 1
        yield chunks


def candidates(num_spans: int, spec: SearchSpec) -> list[Candidate]:
    """All candidate groupings of a problem before scoring (bounded)."""
    count = min(num_spans, spec.max_spans)
    if count == 0:
        return [Candidate((), "LEARNED")]
    tails: list[str | None] = [None, "LEARNED", *spec.tail_templates]
    out = []
    for chunks in compositions(count, spec.max_group_size):
        for tail in tails:
            if tail in spec.tail_templates and len(chunks) < 2:
                continue
            out.append(Candidate(chunks, tail))
    return out
