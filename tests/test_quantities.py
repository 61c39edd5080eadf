"""The quantity grammar en-numerals-v1: span text -> exact value."""

from fractions import Fraction

import pytest

from mycelium.runtime.quantities import parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("48", Fraction(48)),
        ("$1,200", Fraction(1200)),
        ("3.5", Fraction(7, 2)),
        (".25", Fraction(1, 4)),
        ("1/3", Fraction(1, 3)),
        ("20%", Fraction(20)),
        ("-4", Fraction(-4)),
        ("twenty-five", Fraction(25)),
        ("a dozen", Fraction(12)),
        ("two dozen", Fraction(24)),
        ("half", Fraction(1, 2)),
        ("a hundred", Fraction(100)),
        ("one hundred and five", Fraction(105)),
        ("3 million", Fraction(3_000_000)),
        ("five hundred thousand", Fraction(500_000)),
        ("twice", Fraction(2)),
        ("Seven", Fraction(7)),
    ],
)
def test_parses_numerals(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "apples", "1,20", "1,2345", "1/0", "an hour", "١٢", "3..5", "x" * 100, "1/2/3", "--4"],
)
def test_rejects_non_numerals(text: str) -> None:
    assert parse_quantity(text) is None


def test_non_string_is_none() -> None:
    assert parse_quantity(None) is None  # type: ignore[arg-type]
