"""The candidate search is bounded and enumerates consecutive chunks."""

from mycelium.runtime.search import Candidate, candidates, compositions, unique_groups
from mycelium.runtime.spec import SearchSpec


def test_compositions_cover_spans_in_order() -> None:
    splits = list(compositions(4, 3))
    assert len(splits) == 7  # compositions of 4 into parts of 1..3
    for chunks in splits:
        assert [i for chunk in chunks for i in chunk] == [0, 1, 2, 3]
        assert all(1 <= len(chunk) <= 3 for chunk in chunks)


def test_unique_groups_are_windows_plus_tail() -> None:
    groups = unique_groups(3, SearchSpec())
    assert groups == [(0,), (0, 1), (0, 1, 2), (1,), (1, 2), (2,), ()]


def test_every_candidate_uses_only_unique_groups() -> None:
    spec = SearchSpec()
    allowed = set(unique_groups(5, spec))
    for cand in candidates(5, spec):
        assert set(cand.chunks) <= allowed


def test_no_spans_gives_only_the_tail() -> None:
    assert candidates(0, SearchSpec()) == [Candidate((), "LEARNED")]


def test_search_is_bounded_for_many_spans() -> None:
    spec = SearchSpec(max_spans=12)
    many = candidates(40, spec)
    assert len(unique_groups(40, spec)) == 3 * 12 - 3 + 1
    assert 0 < len(many) <= 2048 * (2 + len(spec.tail_templates))


def test_templates_need_two_steps() -> None:
    for cand in candidates(1, SearchSpec()):
        assert cand.tail in (None, "LEARNED")
