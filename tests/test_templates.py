"""The inputs the classifier and the extractor read: marked problem text and suffixes."""

from __future__ import annotations

from mycelium.runtime.spec import MARKED_TEMPLATES, SolverSpec, Templates
from mycelium.runtime.templates import classifier_suffix, extractor_suffix, marked_problem

QUESTION = "Tom has 3 apples and buys 12 more. How many?"
SPANS = [(8, 9), (26, 28)]


def test_every_span_is_marked_by_its_rank() -> None:
    marked = marked_problem(MARKED_TEMPLATES, QUESTION, SPANS)
    assert marked == "Tom has 3 Q0 apples and buys 12 Q1 more. How many?"


def test_no_marker_keeps_the_text() -> None:
    assert marked_problem(Templates(), QUESTION, SPANS) == QUESTION
    assert marked_problem(MARKED_TEMPLATES, QUESTION, []) == QUESTION


def test_marker_at_the_end_of_the_text() -> None:
    assert marked_problem(MARKED_TEMPLATES, "Add 5", [(4, 5)]) == "Add 5 Q0"


def test_group_items() -> None:
    assert classifier_suffix(Templates(), [(0, "3"), (1, "12")]) == "<sep> Q0=3 Q1=12<cls>"
    assert classifier_suffix(MARKED_TEMPLATES, [(0, "3"), (1, "12")]) == "<sep> Q0 Q1<cls>"
    assert extractor_suffix(Templates(), [], "ADD") == "<sep> none<op> ADD<args>"


def test_spec_written_before_the_marker_reads_unmarked() -> None:
    """A mycelium.json without span_marker (older artifacts) keeps its unmarked inputs;
    a marked one round-trips."""
    data = SolverSpec().to_dict()
    del data["templates"]["span_marker"]
    assert SolverSpec.from_dict(data).templates.span_marker == ""
    marked = SolverSpec(templates=MARKED_TEMPLATES)
    assert SolverSpec.from_dict(marked.to_dict()).templates == MARKED_TEMPLATES
