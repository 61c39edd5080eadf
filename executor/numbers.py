"""Exact number text: parse constant literals, format fractions, coerce inputs."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

MAX_LITERAL_CHARS = 40
MAX_DECIMAL_DIGITS = 400

_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?", re.ASCII)
_RATIO = re.compile(r"(-?)([0-9]+)/([0-9]+)", re.ASCII)


def parse_number(text: str) -> Fraction | None:
    """Parse an ASCII literal ("12", "-3", "0.25", "1/3") exactly; ``None`` if malformed.

    No exponents, whitespace, separators or non-ASCII digits; at most 40 characters.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_LITERAL_CHARS:
        return None
    match = _DECIMAL.fullmatch(text)
    if match:
        sign, whole, decimals = match.groups()
        value = Fraction(int(whole))
        if decimals:
            value += Fraction(int(decimals), 10 ** len(decimals))
        return -value if sign else value
    match = _RATIO.fullmatch(text)
    if match:
        sign, numerator, denominator = match.groups()
        if int(denominator) == 0:
            return None
        value = Fraction(int(numerator), int(denominator))
        return -value if sign else value
    return None


def format_fraction(value: Fraction | int) -> str:
    """Exact text of a value: ``"12"`` for integers, ``"7/2"`` otherwise."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def _terminates(denominator: int) -> bool:
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def format_literal(value: Fraction) -> str:
    """Shortest exact literal that :func:`parse_number` reads back: "60", "0.1", "1/2".

    Integers print bare; otherwise the shorter of the decimal form (when the decimal
    terminates) and the ratio form, the ratio on a tie.
    """
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    ratio = format_fraction(value)
    if not _terminates(value.denominator) or value.denominator > 10**12:
        return ratio
    places = 0
    while 10**places % value.denominator:
        places += 1
    scaled = abs(value.numerator) * (10**places // value.denominator)
    digits = str(scaled).rjust(places + 1, "0")
    decimal = ("-" if value < 0 else "") + f"{digits[:-places]}.{digits[-places:]}"
    return decimal if len(decimal) < len(ratio) else ratio


def to_fraction(value: object) -> Fraction | None:
    """Coerce an input number to an exact Fraction; ``None`` if it is not a finite number.

    Accepts Fraction, int (not bool), finite float (read through its shortest repr, so
    ``0.1`` is 1/10) and finite Decimal of modest size (at most ``MAX_DECIMAL_DIGITS``
    digits and exponent; larger ones are refused rather than expanded).
    """
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(repr(value)) if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        sign, digits, exponent = value.as_tuple()
        if len(digits) > MAX_DECIMAL_DIGITS or abs(exponent) > MAX_DECIMAL_DIGITS:
            return None
        return Fraction(value)
    return None


def format_limit(limit: int) -> str:
    """A bound as text: powers of ten from a million up as ``1e15``, others in full."""
    if limit >= 10**6 and str(limit).rstrip("0") == "1":
        return f"1e{len(str(limit)) - 1}"
    return str(limit)
