"""The extractor's output grammar mycelium-args-v1."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.executor import Arg
from mycelium.runtime.grammar import parse_args


def test_parses_typed_arguments() -> None:
    assert parse_args(" Q0 R1 C60 C1/2") == (
        Arg.quantity(0),
        Arg.result(1),
        Arg.constant(Fraction(60)),
        Arg.constant(Fraction(1, 2)),
    )


@pytest.mark.parametrize(
    "text", ["", "   ", "Q", "Qx", "R0", "Q-1", "C", "Cabc", "X1", "Q0 banana", "Q1000", "Q0 " * 9]
)
def test_off_grammar_output_is_none(text: str) -> None:
    assert parse_args(text) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_never_raises_on_any_text(text: str) -> None:
    result = parse_args(text)
    assert result is None or all(isinstance(arg, Arg) for arg in result)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.builds(Arg.quantity, st.integers(0, 63)),
    st.builds(Arg.result, st.integers(1, 63)),
    st.builds(Arg.constant, st.fractions(min_value=-1000, max_value=1000, max_denominator=50)),
), min_size=1, max_size=8))
def test_round_trips_written_arguments(args: list[Arg]) -> None:
    assert parse_args(" ".join(arg.to_text() for arg in args)) == tuple(args)
