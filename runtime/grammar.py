"""Parse the extractor's output against its declared grammar (`mycelium-args-v1`).

    output := arg (" " arg)*
    arg    := "Q" digits | "R" digits | "C" number

This is parsing a model's output against the grammar it was trained to write,
not a guess about the problem's language.
"""

from __future__ import annotations

from mycelium.executor import Arg, canonical_args
from mycelium.executor.numbers import parse_number

MAX_ARGS = 8
MAX_INDEX = 64


def _parse_index(text: str) -> int | None:
    if not text or len(text) > 3 or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def parse_arg(token: str) -> Arg | None:
    """One argument token such as ``Q0``, ``R1`` or ``C60``; ``None`` if malformed."""
    if len(token) < 2:
        return None
    kind, rest = token[0], token[1:]
    if kind == "Q":
        index = _parse_index(rest)
        return Arg.quantity(index) if index is not None and index < MAX_INDEX else None
    if kind == "R":
        index = _parse_index(rest)
        return Arg.result(index) if index is not None and 1 <= index < MAX_INDEX else None
    if kind == "C":
        value = parse_number(rest)
        return Arg.constant(value) if value is not None else None
    return None


def parse_args(text: str) -> tuple[Arg, ...] | None:
    """All arguments of one extraction, or ``None`` if any token is off-grammar."""
    if not isinstance(text, str):
        return None
    tokens = text.split()
    if not tokens or len(tokens) > MAX_ARGS:
        return None
    args = tuple(parse_arg(token) for token in tokens)
    if any(arg is None for arg in args):
        return None
    return args  # type: ignore[return-value]


def canonical_text(op: str, text: str) -> str:
    """An extraction's arguments in the executor's canonical order for ``op`` (``MUL R1 Q0``
    reads ``Q0 R1``), whitespace normalized; off-grammar text comes back normalized only."""
    args = parse_args(text)
    if args is None:
        return " ".join(text.split())
    return " ".join(arg.to_text() for arg in canonical_args(op, args))
