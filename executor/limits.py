"""Bounds that keep every execution exact, small and fast."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

_BITS_PER_DIGIT = 3.33  # a little above log2(10)


@dataclass(frozen=True)
class Limits:
    """Execution bounds.

    ``max_abs``: largest allowed |value| of any input or intermediate.
    ``max_denominator``: largest allowed denominator of any input or intermediate.
    ``max_numerator_digits``: hard cap on the estimated size (decimal digits) of an
    operation's unreduced numerator or denominator, checked before computing it.
    """

    max_steps: int = 16
    max_args: int = 8
    max_abs: int = 10**15
    max_denominator: int = 10**6
    max_numerator_digits: int = 40

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_args", "max_abs", "max_denominator",
                     "max_numerator_digits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        if self.max_numerator_digits > 10_000:
            raise ValueError("Limits.max_numerator_digits must be at most 10000")

    @cached_property
    def max_bits(self) -> int:
        """The digit cap in bits."""
        return int(self.max_numerator_digits * _BITS_PER_DIGIT) + 1
