"""The candidate search is bounded and enumerates consecutive chunks of used spans."""

import math

import pytest

from mycelium.runtime import search
from mycelium.runtime.errors import ArtifactsError
from mycelium.runtime.search import (
    Candidate,
    UsedSet,
    candidates,
    compositions,
    unique_groups,
    used_sets,
    windows,
)
from mycelium.runtime.spec import SearchSpec


def test_compositions_cover_items_in_order() -> None:
    splits = list(compositions([0, 2, 3, 5], 3))
    assert len(splits) == 7  # compositions of 4 into parts of 1..3
    for chunks in splits:
        assert [i for chunk in chunks for i in chunk] == [0, 2, 3, 5]
        assert all(1 <= len(chunk) <= 3 for chunk in chunks)


def test_groups_may_skip_spans_another_group_reads() -> None:
    assert list(windows(4, 2, 1)) == [(0,), (0, 1), (0, 2), (1,), (1, 2), (1, 3), (2,), (2, 3),
                                      (3,)]
    assert list(windows(4, 3, 0)) == [(0,), (0, 1), (0, 1, 2), (1,), (1, 2), (1, 2, 3), (2,),
                                      (2, 3), (3,)]
    splits = list(compositions([0, 2, 3, 5], 3, gap=1))
    assert list(compositions([0, 2, 3, 5], 3)) == [s for s in splits if all(
        [0, 2, 3, 5].index(g[-1]) - [0, 2, 3, 5].index(g[0]) == len(g) - 1 for g in s)]
    assert ((0, 3), (2, 5)) in splits and ((0, 3, 5), (2,)) in splits
    assert len(splits) == len(set(splits)) == 12
    for chunks in splits:
        assert sorted(i for chunk in chunks for i in chunk) == [0, 2, 3, 5]
        assert [chunk[0] for chunk in chunks] == sorted(chunk[0] for chunk in chunks)
    spec = SearchSpec(group_gap=1)
    sets = [UsedSet((0, 2, 3, 5), 0.0)]
    allowed = set(unique_groups(sets, spec))
    assert all(set(c.chunks) <= allowed for c in candidates(sets, spec))
    assert (0, 3) in allowed and (0, 5) not in allowed  # one skipped span at most


def test_used_sets_start_with_the_reading_and_flip_uncertain_spans() -> None:
    sets = used_sets([0.9, 0.55, 0.02, 0.4], SearchSpec(used_flips=2))
    assert sets[0].spans == (0, 1)
    assert {s.spans for s in sets[1:]} == {(0,), (0, 1, 3)}
    assert sets[0].logprob > max(s.logprob for s in sets[1:])
    expected = math.log(0.9) + math.log(0.55) + math.log(0.98) + math.log(0.6)
    assert math.isclose(sets[0].logprob, expected)


def test_unique_groups_are_windows_of_used_spans_plus_tail() -> None:
    groups = unique_groups([UsedSet((0, 2, 3), 0.0)], SearchSpec())
    assert groups == [(0,), (0, 2), (0, 2, 3), (2,), (2, 3), (3,), ()]


def test_every_candidate_uses_only_unique_groups() -> None:
    spec = SearchSpec()
    sets = used_sets([0.9, 0.6, 0.3, 0.8, 0.7], spec)
    allowed = set(unique_groups(sets, spec))
    cands = candidates(sets, spec)
    assert cands
    for cand in cands:
        assert set(cand.chunks) <= allowed


def test_no_used_spans_gives_only_the_tail() -> None:
    assert candidates([UsedSet((), -1.0)], SearchSpec()) == [Candidate((), "LEARNED", -1.0)]


def test_learned_steps_end_a_candidate_with_several_empty_group_readings() -> None:
    from mycelium.runtime.ranking import steps_of

    spec = SearchSpec(learned_steps=2, tail_templates=())
    assert candidates([UsedSet((), -1.0)], spec) == [
        Candidate((), "LEARNED", -1.0, 1), Candidate((), "LEARNED", -1.0, 2)]
    cands = candidates([UsedSet((0, 1), -0.5)], spec)
    assert Candidate(((0, 1),), "LEARNED", -0.5, 2) in cands
    assert len(cands) == 2 * 3  # compositions (0 1), (0)(1): no tail, one or two learned
    assert steps_of(Candidate(((0,), (1,)), "LEARNED", 0.0, 2)) == [(0,), (1,), (), ()]
    assert steps_of(Candidate(((0,), (1,)), "ACC_ADD", 0.0, 2)) == [(0,), (1,)]


def test_search_is_bounded_for_many_spans() -> None:
    spec = SearchSpec(max_spans=12)
    sets = used_sets([0.9] * 40, spec)
    assert all(len(s.spans) <= 12 for s in sets)
    assert len(unique_groups(sets, spec)) <= 3 * 12 * len(sets) + 1
    assert 0 < len(candidates(sets, spec)) <= 2048 * (2 + len(spec.tail_templates)) * len(sets)


def test_templates_need_two_steps() -> None:
    for cand in candidates([UsedSet((4,), 0.0)], SearchSpec()):
        assert cand.tail in (None, "LEARNED")


# ------------------------------------------------------------------ chunk orders
def test_chunk_orders_text_order_first_and_bounded() -> None:
    spec = SearchSpec(permute_chunks=3)
    orders = list(search.chunk_orders(3, spec))
    assert orders[0] == (0, 1, 2) and len(orders) == 6 == len(set(orders))
    assert list(search.chunk_orders(4, spec)) == [(0, 1, 2, 3)]  # over the bound: text order
    assert list(search.chunk_orders(3, SearchSpec(permute_chunks=1))) == [(0, 1, 2)]
    assert search.inversions((0, 1, 2)) == 0 and search.inversions((2, 1, 0)) == 3


@pytest.mark.parametrize(
    ("refs", "template", "ok"),
    [
        ([[], [1]], None, True),  # step 1 reads step 0
        ([[1], []], None, False),  # step 0 reads a result that does not exist yet
        ([[], []], None, False),  # step 0's result is never used
        ([[], [], [2, 1]], None, True),
        ([[], [], [1]], None, False),  # step 0 unused
        ([[], []], "ACC_ADD", True),  # the template reads every result
        ([[], [], []], "DERIVED_MUL", False),  # reads only the last two
        ([[], [], [1]], "DERIVED_MUL", False),
        ([[], [1], []], "DERIVED_MUL", True),
        ([[]], None, True),
    ],
)
def test_references_ok(refs, template, ok) -> None:
    assert search.references_ok(refs, template) is ok


def test_references_ok_without_connectedness_only_checks_resolution() -> None:
    assert search.references_ok([[], []], connected=False)
    assert not search.references_ok([[2], []], connected=False)


def test_group_breadth_reads_the_tail_group_with_its_own_settings() -> None:
    from mycelium.runtime.spec import group_breadth

    spec = SearchSpec(ops_per_group=2, arg_readings=2, readings_per_group=3)
    assert group_breadth(spec, (0, 1)) == group_breadth(spec, ()) == (2, 2, 3)
    wide = SearchSpec(ops_per_group=2, arg_readings=2, tail_ops=4, tail_arg_readings=3,
                      tail_readings=8)
    assert group_breadth(wide, (0,)) == (2, 2, 2) and group_breadth(wide, ()) == (4, 3, 8)


def test_search_overrides_are_typed_and_checked() -> None:
    from mycelium.runtime.spec import override_search

    spec = override_search(SearchSpec(), ["permute_chunks=1", "connected=false",
                                          "inversion_logprob=-2.5", "tail_templates=AVG"])
    assert (spec.permute_chunks, spec.connected, spec.inversion_logprob) == (1, False, -2.5)
    assert spec.tail_templates == ("AVG",)
    for bad in (["nope=1"], ["permute_chunks"], ["permute_chunks=x"], ["connected=maybe"],
                ["ops_per_group=0"], ["tail_ops=-1"]):
        with pytest.raises(ArtifactsError, match="--search"):
            override_search(SearchSpec(), bad)


def test_search_blocks_are_written_and_read_by_one_pair_of_functions() -> None:
    import json
    from dataclasses import asdict

    from mycelium.runtime.spec import SolverSpec, search_from_record, search_record

    spec = SearchSpec(group_gap=1, min_op_prob=0.1, tail_templates=("AVG",))
    assert search_record(spec) == asdict(spec)  # mycelium.json and the manifest: all settings
    assert search_record(spec, changed_only=True) == {  # coverage.json: the changed ones
        "group_gap": 1, "min_op_prob": 0.1, "tail_templates": ("AVG",)}
    assert search_record(SearchSpec(), changed_only=True) == {}
    for record in (search_record(spec), search_record(spec, changed_only=True)):
        assert search_from_record(json.loads(json.dumps(record))) == spec
    assert SolverSpec(search=spec).to_dict()["search"] == search_record(spec)
    assert SolverSpec.from_dict(json.loads(json.dumps(SolverSpec(search=spec).to_dict()))
                                ).search == spec
    for bad in ({"ops_per_group": 0}, {"nope": 1}, {"min_op_prob": 1.5}):
        with pytest.raises((TypeError, ValueError)):
            search_from_record(bad)
