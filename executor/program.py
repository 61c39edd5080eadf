"""Program data types: typed arguments, steps, and the operation vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from .numbers import format_literal

OPERATIONS: tuple[str, ...] = ("ADD", "SUB", "MUL", "DIV")
TEMPLATES: tuple[str, ...] = ("ACC_ADD", "ACC_SUB", "AVG", "DERIVED_MUL")
DEFAULT_CONSTANTS: frozenset[Fraction] = frozenset(
    [Fraction(1, 100), Fraction(1, 2)]
    + [Fraction(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 24, 52, 60, 100, 365, 1000)]
)

COMMUTATIVE: frozenset[str] = frozenset({"ADD", "MUL"})  # argument order never matters

ArgKind = Literal["quantity", "result", "constant", "template"]
_KIND_RANK = {"quantity": 0, "result": 1, "constant": 2, "template": 3}


@dataclass(frozen=True)
class Arg:
    """A typed step argument.

    ``quantity``: ``index`` is the quantity span (``Q<i>``, 0-based);
    ``result``: ``index`` is how many steps back (``R1`` = previous step);
    ``constant``: ``value`` is the constant (``C<n>``).
    ``template`` is reserved and never valid as an explicit argument.
    """

    kind: ArgKind
    index: int | None = None
    value: Fraction | None = None

    @staticmethod
    def quantity(index: int) -> Arg:
        """``Q<index>``: the index-th quantity span (0-based)."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"quantity index must be an int >= 0, got {index!r}")
        return Arg("quantity", index=index)

    @staticmethod
    def result(back: int) -> Arg:
        """``R<back>``: the result of the step ``back`` steps earlier (``R1`` = previous)."""
        if isinstance(back, bool) or not isinstance(back, int) or back < 1:
            raise ValueError(f"result reference must be an int >= 1, got {back!r}")
        return Arg("result", index=back)

    @staticmethod
    def constant(value: Fraction | int) -> Arg:
        """``C<value>``: a constant (must be allowed by the executor's constant set)."""
        if isinstance(value, bool) or not isinstance(value, (Fraction, int)):
            raise ValueError(f"constant must be a Fraction or int, got {value!r}")
        return Arg("constant", value=Fraction(value))

    def to_text(self) -> str:
        """Grammar text of the argument: ``Q0``, ``R1``, ``C60``, ``C0.5``, ``C1/3``."""
        if self.kind == "quantity":
            return f"Q{self.index}"
        if self.kind == "result":
            return f"R{self.index}"
        if self.kind == "constant" and self.value is not None:
            return f"C{format_literal(self.value)}"
        return "T" if self.kind == "template" else "?"


@dataclass(frozen=True)
class Step:
    """One operation applied to its arguments (templates take none)."""

    op: str
    args: tuple[Arg, ...] = ()

    def to_text(self) -> str:
        """Readable text of the step, e.g. ``ADD Q0 R1``."""
        return " ".join([self.op, *(arg.to_text() for arg in self.args)])


def canonical_args(op: str, args: tuple[Arg, ...]) -> tuple[Arg, ...]:
    """``args`` in one fixed order when ``op`` is commutative (quantities by index, then
    results by distance, then constants by value); otherwise unchanged."""
    if op not in COMMUTATIVE:
        return args
    return tuple(sorted(args, key=lambda a: (_KIND_RANK[a.kind], a.index or 0, a.value or 0)))


Program = tuple[Step, ...]
