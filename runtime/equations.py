"""The equation grammar the program writer writes a program in (torch-free).

A program is one equation per line, each an operation folded over two or more operands
and its result: ``48/2=24\\n48+24=72\\n``. An operand is written by its value: a quantity
of the problem, a constant of the executor, or an earlier step's result. The result after
``=`` is never chosen by the model: the executor computes it and it is written for the
model to read (``forced``). Every character is one token, so a decoder can be constrained
to the grammar character by character.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from mycelium.executor import Arg, execute
from mycelium.executor.program import Step

OPERATORS = {"ADD": "+", "SUB": "-", "MUL": "*", "DIV": "/"}
ALPHABET = "0123456789.-+*/=\n"  # every character the grammar writes
MAX_DECIMALS = 4  # a non-terminating result is written rounded to this many places


def value_text(value: Fraction) -> str:
    """How a value is written: ``12``, ``2.5``, ``-3``, ``0.3333`` (rounded, if it does not
    terminate). Distinct values may share a text only when they do not terminate."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    rounded = round(value, MAX_DECIMALS)
    text = f"{float(rounded):.{MAX_DECIMALS}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


@dataclass(frozen=True)
class Equations:
    """A program written in the grammar, with the characters the model does not choose."""

    text: str
    forced: tuple[bool, ...]  # per character of ``text``: written by the executor


def write_equations(steps: Sequence[tuple[str, Sequence[Fraction]]],
                    results: Sequence[Fraction]) -> Equations:
    """The text of ``steps`` (operation name, operand values) given each step's result."""
    text, forced = [], []
    for (op, operands), result in zip(steps, results, strict=True):
        written = OPERATORS[op].join(value_text(v) for v in operands) + "="
        text.append(written)
        forced += [False] * len(written)
        answer = value_text(result) + "\n"
        text.append(answer)
        forced += [True] * len(answer)
    return Equations("".join(text), tuple(forced))


@dataclass(frozen=True)
class Sources:
    """The values a step may read, by their text: the problem's quantities (in text order)
    and the executor's constants; earlier results come from the program itself."""

    quantities: tuple[Fraction, ...]
    constants: tuple[Fraction, ...]

    def operand_texts(self, results: Sequence[Fraction]) -> set[str]:
        """Every operand text allowed after ``results`` were computed."""
        return {value_text(v) for v in (*self.quantities, *self.constants, *results)}

    def resolve(self, text: str, results: Sequence[Fraction]) -> Arg | None:
        """The typed argument an operand text names: the latest earlier result first, then
        the first quantity, then a constant; ``None`` if nothing has that text."""
        for back, value in enumerate(reversed(results), start=1):
            if value_text(value) == text:
                return Arg.result(back)
        for index, value in enumerate(self.quantities):
            if value_text(value) == text:
                return Arg.quantity(index)
        for value in self.constants:
            if value_text(value) == text:
                return Arg.constant(value)
        return None


END = "END"  # the decoder's choice that ends the program


@dataclass(frozen=True)
class WriterState:
    """Where a grammar-constrained decoder stands in a program."""

    steps: tuple[Step, ...] = ()  # complete steps, typed
    results: tuple[Fraction, ...] = ()  # their exact results
    operator: str | None = None  # the current step's operator character, once written
    operands: tuple[str, ...] = ()  # the current step's complete operand texts
    partial: str = ""  # the operand being written


def allowed(state: WriterState, sources: Sources) -> set[str]:
    """The characters (and END) the grammar allows next."""
    texts = sources.operand_texts(state.results)
    out = {text[len(state.partial)] for text in texts
           if len(text) > len(state.partial) and text.startswith(state.partial)}
    if state.partial in texts:
        out |= {state.operator} if state.operator else set(OPERATORS.values())
        if state.operands:
            out.add("=")
    if not state.partial and not state.operands and state.steps:
        out.add(END)
    return out


def advance(state: WriterState, char: str, sources: Sources
            ) -> tuple[WriterState, str] | None:
    """The state after ``char`` (allowed) and the text the executor then writes (the
    result and a newline after ``=``); ``None`` if the executor rejects the step."""
    if char == "=":
        texts = (*state.operands, state.partial)
        args = tuple(sources.resolve(text, state.results) for text in texts)
        op = next(name for name, c in OPERATORS.items() if c == state.operator)
        steps = (*state.steps, Step(op, args))
        run = execute(steps, sources.quantities, constants=sources.constants)
        if not run.ok:
            return None
        return WriterState(steps, (*state.results, run.value)), value_text(run.value) + "\n"
    if state.partial and state.partial in sources.operand_texts(state.results) and (
            char in OPERATORS.values()):
        return WriterState(state.steps, state.results, char,
                           (*state.operands, state.partial)), ""
    return WriterState(state.steps, state.results, state.operator, state.operands,
                       state.partial + char), ""


def finish(state: WriterState, sources: Sources) -> Fraction | None:
    """The answer of a program ended in ``state``, if the executor accepts it whole (every
    result but the last read by a later step)."""
    run = execute(state.steps, sources.quantities, constants=sources.constants,
                  connected=True)
    return run.value if run.ok else None


def char_ids(tokenizer, alphabet: str = ALPHABET) -> list[int]:
    """The id of each grammar character in a `tokenizers.Tokenizer` vocabulary; a
    ValueError names a character that is not exactly one token."""
    ids = []
    for char in alphabet:
        encoded = tokenizer.encode(char, add_special_tokens=False).ids
        if len(encoded) != 1:
            raise ValueError(f"{char!r} is not one token of the base vocabulary")
        ids.append(encoded[0])
    return ids

