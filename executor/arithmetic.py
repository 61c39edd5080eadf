"""Bounded exact arithmetic: size-check operands before computing, bound every result."""

from __future__ import annotations

from fractions import Fraction

from .limits import Limits
from .numbers import format_limit
from .results import ExecutionError


def _estimate_bits(op: str, a: Fraction, b: Fraction) -> int:
    """Upper bound on the bit length of the unreduced numerator and denominator of a op b."""
    an, ad = a.numerator.bit_length(), a.denominator.bit_length()
    bn, bd = b.numerator.bit_length(), b.denominator.bit_length()
    if op in ("ADD", "SUB"):
        return max(an + bd + 1, bn + ad + 1, ad + bd)
    if op == "MUL":
        return max(an + bn, ad + bd)
    return max(an + bd, ad + bn)  # DIV


def check_value(value: Fraction, limits: Limits, where: str, what: str = "") -> Fraction:
    """Return ``value`` if it is within the limits, else raise :class:`ExecutionError`.

    ``what`` prefixes the message (e.g. ``"quantity Q0 "``); ``where`` ends it.
    """
    numerator, denominator = value.numerator, value.denominator
    bits = limits.max_bits
    if denominator > limits.max_denominator or denominator.bit_length() > bits:
        raise ExecutionError(
            f"{what}denominator exceeds {format_limit(limits.max_denominator)} {where}"
        )
    if numerator.bit_length() > bits or abs(numerator) > limits.max_abs * denominator:
        raise ExecutionError(f"{what}magnitude exceeds {format_limit(limits.max_abs)} {where}")
    return value


def apply(op: str, a: Fraction, b: Fraction, limits: Limits, where: str) -> Fraction:
    """``a op b`` exactly, refusing before computing if the operands are too large."""
    if _estimate_bits(op, a, b) > limits.max_bits:  # refuse before computing
        raise ExecutionError(
            f"operands too large (over {limits.max_numerator_digits} digits) {where}"
        )
    if op == "ADD":
        result = a + b
    elif op == "SUB":
        result = a - b
    elif op == "MUL":
        result = a * b
    elif op == "DIV":
        if b == 0:
            raise ExecutionError(f"division by zero {where}")
        result = a / b
    else:
        raise ExecutionError(f"unknown operation {op} {where}")
    return check_value(result, limits, where)


def fold(op: str, values: list[Fraction], limits: Limits, where: str) -> Fraction:
    """Left fold of ``op`` over ``values`` (at least one), bounding every partial result."""
    total = values[0]
    for value in values[1:]:
        total = apply(op, total, value, limits, where)
    return total
