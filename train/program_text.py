"""A candidate program written out as the worked solutions write their arithmetic.

One line per executed step (``48/2 = 24``), operands and results as exact literals, the
last line the answer (``#### 72``) the way GSM8K solutions end. A candidate cache
(`mycelium-train scorer --cache`) keeps this text per candidate, for reading the
candidates and for the program-verifier experiment (docs/experiments/program_verifier.py).
It renders the executed program only; nothing here reads the problem's words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mycelium.executor.numbers import format_literal, parse_number

SYMBOLS: Mapping[str, str] = {
    "ADD": "+", "SUB": "-", "MUL": "*", "DIV": "/",
    "ACC_ADD": "+", "ACC_SUB": "-", "DERIVED_MUL": "*", "AVG": "+",
}


def _literal(text: str) -> str:
    value = parse_number(text)
    if value is None:
        raise ValueError(f"program value {text!r} is not an exact number")
    literal = format_literal(value)
    return f"({literal})" if "/" in literal or value < 0 else literal


def render_step(step: Mapping[str, Any]) -> str:
    """One step of a program record (`program_record`) as ``a op b = result``."""
    op = step["op"]
    if op not in SYMBOLS:
        raise ValueError(f"unknown program operation {op!r}")
    operands = [_literal(arg["value"]) for arg in step["args"]]
    expression = SYMBOLS[op].join(operands)
    if op == "AVG":
        expression = f"({expression})/{len(operands)}"
    return f"{expression} = {_literal(step['result'])}"


def render_program(program: Sequence[Mapping[str, Any]]) -> str:
    """A whole program record as solution text: a line per step, then ``#### answer``."""
    if not program:
        raise ValueError("an empty program has no rendering")
    lines = [render_step(step) for step in program]
    lines.append(f"#### {_literal(program[-1]['result']).strip('()')}")
    return "\n".join(lines)
