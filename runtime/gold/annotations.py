"""Parse GSM8K calculator annotations ``<<EXPR=RESULT>>`` into exact arithmetic steps.

Every expression is parsed with Python's ``ast`` (``mode="eval"``). Allowed nodes: number
literals, the binary operators ``+ - * /``, unary ``-``/``+`` on a number literal, and
parentheses (implicit in the tree). Anything else raises :class:`AnnotationError` with a
short reason (counted in the coverage report).

Pre-normalisation (:func:`normalise`), applied to an annotation's text before parsing,
character by character (no regexes):

- ``$`` (and ``€ £ ¥``) directly before a digit or ``.`` is dropped;
- ``%`` directly after a digit is dropped (the runtime's ``parse_quantity`` also reads
  "50%" as 50, so both sides agree);
- a comma between a digit and exactly three digits (not followed by another digit) is a
  thousands separator and is dropped: ``1,200`` -> ``1200``; any other comma stays and makes
  the annotation fail to parse.

Decomposition: each ``BinOp`` node is one step, in post-order. Chains of the same
associative operator are flattened into one n-ary step (``a+b+c`` and ``a+(b+c)`` ->
``ADD a b c``); chains of ``-`` or ``/`` are flattened on their left operand only
(``a-b-c`` -> ``SUB a b c``; ``a-(b-c)`` stays two steps). Values are exact Fractions.
A division of two integer literals with a non-integer value may be read as one fraction
literal (``3/4*40``: the leaf 3/4) when the caller says that value is a number of the
problem (see
:func:`parse_annotation`).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from mycelium.executor.numbers import parse_number as parse_literal

OPERATORS: dict[type, str] = {ast.Add: "ADD", ast.Sub: "SUB", ast.Mult: "MUL", ast.Div: "DIV"}
ASSOCIATIVE = ("ADD", "MUL")  # flattened on both operands
LEFT_CHAINS = ("SUB", "DIV")  # flattened on the left operand only
_CURRENCY = "$€£¥"
_PLAIN_CHARS = "0123456789.+-*/()$,% x×"  # characters of an unmarked calculation


class AnnotationError(ValueError):
    """An annotation outside the supported arithmetic; ``reason`` is a short counter key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Leaf:
    """A number literal of an annotation (to be aligned to a span, a result or a constant)."""

    value: Fraction
    text: str


@dataclass(frozen=True)
class Ref:
    """The result of another step of the same annotation (structural, never re-aligned)."""

    step: int  # absolute index in the problem's step list


Operand = Leaf | Ref


@dataclass
class RawStep:
    """One arithmetic operation of a worked solution, before alignment."""

    op: str
    operands: list[Operand]
    value: Fraction
    annotation: int  # index of the annotation it comes from
    written: Fraction | None = None  # the RESULT written after '=' (root step only)


def annotation_bounds(answer: str) -> list[tuple[int, int]]:
    """(start, end) of each ``<<...>>`` marker (markers included), in order."""
    bounds = []
    position = 0
    while True:
        start = answer.find("<<", position)
        if start < 0:
            return bounds
        end = answer.find(">>", start + 2)
        if end < 0:
            raise AnnotationError("unclosed_annotation")
        bounds.append((start, end + 2))
        position = end + 2


def find_annotations(answer: str) -> list[str]:
    """Bodies of the ``<<...>>`` markers of a worked solution, in order."""
    return [answer[start + 2 : end - 2] for start, end in annotation_bounds(answer)]


def _has_operator(expression: str) -> bool:
    """Whether a normalised expression applies an operator (not just a signed number)."""
    body = expression.strip().lstrip("+-")
    return any(op in body for op in "+-*/")


def _written_number(text: str, start: int) -> str:
    """The number written at ``text[start:]`` after optional spaces and a currency sign."""
    i = start
    while i < len(text) and (text[i] == " " or text[i] in _CURRENCY):
        i += 1
    end = i
    while end < len(text) and (text[end].isdigit() or text[end] in ".,"):
        end += 1
    return text[i:end].rstrip(".,")


def plain_calculations(answer: str) -> list[tuple[int, str]]:
    """Calculations written *without* a marker: ``(position, "EXPR=RESULT")`` pairs.

    For each ``=`` outside the markers, the expression is the longest run of calculator
    characters before it that parses (``x``/``×`` read as ``*``) and applies an operator.
    A calculation followed by a marker that repeats it (``48/2 = <<48/2=24>>``) is skipped;
    one followed by a bare marker (``12 - 4 = <<8=8>>``) is kept.
    """
    bounds = annotation_bounds(answer)
    inside = [False] * (len(answer) + 1)
    for start, end in bounds:
        for i in range(start, end):
            inside[i] = True
    out = []
    for position, char in enumerate(answer):
        if char != "=" or inside[position]:
            continue
        begin = position
        while begin > 0 and not inside[begin - 1] and answer[begin - 1] in _PLAIN_CHARS:
            begin -= 1
        after = position + 1
        while after < len(answer) and answer[after] in " " + _CURRENCY:
            after += 1
        written = _written_number(answer, position + 1)
        if answer.startswith("<<", after):
            body = answer[after + 2 : answer.find(">>", after)]
            expression, _, result = body.partition("=")
            if _has_operator(normalise(expression)):
                continue  # the marker repeats this calculation
            written = result
        raw = answer[begin:position]
        for cut in range(len(raw)):
            candidate = normalise(raw[cut:].replace("×", "*").replace("x", "*")).strip()
            if not candidate or not _has_operator(candidate):
                continue
            try:
                parse_annotation(f"{candidate}={written}", [], 0)
            except AnnotationError:
                continue
            out.append((position, f"{candidate}={written}"))
            break
    return out


def final_answer_text(answer: str) -> str | None:
    """The text after the last ``####`` marker, or ``None`` when there is none."""
    marker = answer.rfind("####")
    if marker < 0:
        return None
    return answer[marker + 4 :].strip()


def normalise(text: str) -> str:
    """Drop currency signs, percent signs and thousands commas attached to numbers."""
    out: list[str] = []
    length = len(text)
    for i, char in enumerate(text):
        after = text[i + 1] if i + 1 < length else ""
        before = text[i - 1] if i > 0 else ""
        if char in _CURRENCY and (after.isdigit() or after == "."):
            continue
        if char == "%" and before.isdigit():
            continue
        if char == "," and before.isdigit():
            group = text[i + 1 : i + 4]
            follower = text[i + 4] if i + 4 < length else ""
            if len(group) == 3 and group.isdigit() and not follower.isdigit():
                continue
        out.append(char)
    return "".join(out)


def parse_number(text: str) -> Fraction:
    """Exact value of an annotation's number such as ``3.5``, ``.5``, ``5.`` or ``$1,200``:
    the text normalised, written as the executor's literal (``0.5``, ``5``) and read by
    :func:`mycelium.executor.numbers.parse_number`."""
    literal = normalise(text).strip()
    sign = literal[:1] if literal[:1] in ("+", "-") else ""
    digits = literal[len(sign):]
    if digits[:1] in ("+", "-"):
        raise AnnotationError("bad_number")
    if digits.startswith("."):
        digits = "0" + digits
    if digits.endswith(".") and digits[:-1].isdigit():
        digits = digits[:-1]
    value = parse_literal(("-" if sign == "-" else "") + digits)
    if value is None:
        raise AnnotationError("bad_number")
    return value


def _chain(node: ast.expr, op: str) -> list[ast.expr]:
    """Operand nodes of a flattened chain of ``op`` rooted at ``node``."""
    if not (isinstance(node, ast.BinOp) and OPERATORS.get(type(node.op)) == op):
        return [node]
    left = _chain(node.left, op)
    right = _chain(node.right, op) if op in ASSOCIATIVE else [node.right]
    return [*left, *right]


def _apply(op: str, values: list[Fraction]) -> Fraction:
    result = values[0]
    for value in values[1:]:
        if op == "ADD":
            result += value
        elif op == "SUB":
            result -= value
        elif op == "MUL":
            result *= value
        else:
            if value == 0:
                raise AnnotationError("division_by_zero")
            result /= value
    return result


LiteralTest = Callable[[Fraction], bool]


def _is_int_literal(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


class _Decomposer:
    """Walks one expression tree, appending its steps to a shared list."""

    def __init__(
        self, source: str, steps: list[RawStep], annotation: int, fraction_literal: LiteralTest
    ):
        self.source = source
        self.steps = steps
        self.annotation = annotation
        self.fraction_literal = fraction_literal

    def operand(self, node: ast.expr) -> tuple[Operand, Fraction]:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise AnnotationError("non_numeric_literal")
            text = ast.get_source_segment(self.source, node) or repr(node.value)
            value = parse_number(text)
            return Leaf(value, text), value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner, value = self.operand(node.operand)
            if not isinstance(inner, Leaf):
                raise AnnotationError("unary_minus_on_expression")
            value = -value if isinstance(node.op, ast.USub) else value
            return Leaf(value, inner.text if value >= 0 else "-" + inner.text), value
        if isinstance(node, ast.BinOp):
            op = OPERATORS.get(type(node.op))
            if op is None:
                raise AnnotationError(f"unsupported_operator:{type(node.op).__name__}")
            children = _chain(node, op)
            if op == "DIV" and len(children) == 2 and all(map(_is_int_literal, children)):
                text = ast.get_source_segment(self.source, node) or ""
                value = _apply(op, [parse_number(str(child.value)) for child in children])
                if value.denominator != 1 and self.fraction_literal(value):  # "3/4": a number
                    return Leaf(value, text), value
            parts = [self.operand(child) for child in children]
            value = _apply(op, [v for _, v in parts])
            self.steps.append(RawStep(op, [o for o, _ in parts], value, self.annotation))
            return Ref(len(self.steps) - 1), value
        raise AnnotationError(f"unsupported_node:{type(node).__name__}")


def _never(value: Fraction) -> bool:
    return False


def parse_annotation(
    body: str, steps: list[RawStep], annotation: int, fraction_literal: LiteralTest = _never
) -> None:
    """Append the steps of one annotation body ``EXPR=RESULT`` to ``steps``.

    ``fraction_literal(value)`` decides whether ``a/b`` of two integer literals (not an
    integer itself) is a number written as a fraction (one leaf, e.g. when the problem says
    "3/4" or "half") rather than a division step.
    """
    expression, equals, written = body.partition("=")
    if not equals or "=" in written:
        raise AnnotationError("not_one_equals_sign")
    source = normalise(expression).strip()
    if not source:
        raise AnnotationError("empty_expression")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise AnnotationError("syntax_error") from None
    before = len(steps)
    _Decomposer(source, steps, annotation, fraction_literal).operand(tree.body)
    if len(steps) > before:  # a bare number (<<5=5>>) adds no step
        try:
            steps[-1].written = parse_number(written)
        except AnnotationError:
            steps[-1].written = None


def parse_solution(
    answer: str, fraction_literal: LiteralTest = _never, *, plain: bool = False
) -> list[RawStep]:
    """All steps of a worked solution's annotations, in order (post-order per annotation).

    With ``plain``, the unmarked calculations of :func:`plain_calculations` are merged in
    by position (an unmarked one that fails to parse is skipped, a marked one never is).
    """
    calculations = [(start, answer[start + 2 : end - 2], True)
                    for start, end in annotation_bounds(answer)]
    if plain:
        calculations += [(position, body, False) for position, body in plain_calculations(answer)]
        calculations.sort(key=lambda item: item[0])
    steps: list[RawStep] = []
    for index, (_, body, marked) in enumerate(calculations):
        before = len(steps)
        try:
            parse_annotation(body, steps, index, fraction_literal)
        except AnnotationError:
            if marked:
                raise
            del steps[before:]
    return steps
