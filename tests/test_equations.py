"""The equation grammar of the program writer: writing, the constrained decoder's states,
and the executor as the validator."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from mycelium.executor import Arg
from mycelium.runtime.equations import (
    END,
    Sources,
    WriterState,
    advance,
    allowed,
    finish,
    value_text,
    write_equations,
)

SOURCES = Sources(quantities=(F(48), F(1, 2), F(4)), constants=(F(2), F(60)))


@pytest.mark.parametrize(("value", "text"), [
    (F(12), "12"), (F(5, 2), "2.5"), (F(-3), "-3"), (F(1, 3), "0.3333"), (F(1, 100000), "0"),
])
def test_value_text(value: F, text: str) -> None:
    assert value_text(value) == text


def test_write_equations_marks_what_the_executor_writes() -> None:
    eq = write_equations([("DIV", [F(48), F(2)]), ("ADD", [F(48), F(24)])], [F(24), F(72)])
    assert eq.text == "48/2=24\n48+24=72\n"
    chosen = "".join(c for c, forced in zip(eq.text, eq.forced, strict=True) if not forced)
    assert chosen == "48/2=48+24="


def _write(text: str, sources: Sources = SOURCES) -> WriterState:
    state, pending = WriterState(), ""
    for char in text:
        if pending:
            assert char == pending[0], (text, char, pending)
            pending = pending[1:]
            continue
        assert char in allowed(state, sources), (char, sorted(allowed(state, sources)))
        moved = advance(state, char, sources)
        assert moved is not None
        state, pending = moved
    assert pending == ""
    return state


def test_a_program_decodes_to_typed_steps_and_its_answer() -> None:
    state = _write("48*0.5=24\n48+24=72\n")
    assert state.results == (F(24), F(72))
    assert state.steps[1].args == (Arg.quantity(0), Arg.result(1))
    assert END in allowed(state, SOURCES)
    assert finish(state, SOURCES) == 72


def test_only_known_values_and_one_operator_per_step() -> None:
    start = allowed(WriterState(), SOURCES)
    assert start == {"4", "0", "2", "6"}  # 48, 4, 0.5, 2, 60: their first characters
    assert END not in start  # a program has at least one step
    after_operand = _write("48*")
    assert "+" not in allowed(after_operand, SOURCES)  # one operator per step
    assert "=" not in allowed(_write("4"), SOURCES)  # two operands at least
    assert allowed(_write("48*4"), SOURCES) >= {"*", "="}
    assert "8" in allowed(_write("4"), SOURCES)  # 4 may still become 48


def test_the_executor_rejects_and_validates() -> None:
    zero = Sources(quantities=(F(3), F(0)), constants=())
    divided = _write("3/0", zero)
    assert advance(divided, "=", zero) is None  # division by zero: the beam is dropped
    unused = _write("3*3=9\n3+3=6\n", zero)  # the first result is never read
    assert finish(unused, zero) is None


def test_a_negative_operand_is_not_an_operator() -> None:
    sources = Sources(quantities=(F(-3), F(5)), constants=())
    state = _write("5--3=8\n", sources)
    assert state.steps[0].op == "SUB" and state.results == (F(8),)
