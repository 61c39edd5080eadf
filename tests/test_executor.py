"""The exact executor: exact folds, templates, references, explicit errors, hostile input."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from functools import reduce
from operator import add, mul

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.executor import (
    DEFAULT_CONSTANTS,
    OPERATIONS,
    TEMPLATES,
    Arg,
    ExecutionError,
    ExecutionResult,
    Limits,
    Step,
    canonical_args,
    execute,
    format_fraction,
    parse_number,
)

F = Fraction
Q, R, C = Arg.quantity, Arg.result, Arg.constant


def run(*steps: Step, quantities=(), **kwargs) -> ExecutionResult:
    return execute(tuple(steps), list(quantities), **kwargs)


def value_of(*steps: Step, quantities=(), **kwargs) -> Fraction:
    result = run(*steps, quantities=quantities, **kwargs)
    assert result.ok, result.error
    assert result.error is None
    return result.value


# --- exactness and folds ---------------------------------------------------------------


def test_canonical_args_orders_commutative_steps_only():
    mixed = (C(7), R(2), Q(3), R(1), Q(0))
    assert canonical_args("MUL", mixed) == (Q(0), Q(3), R(1), R(2), C(7))
    assert canonical_args("ADD", (C(12), C(Fraction(1, 2)))) == (C(Fraction(1, 2)), C(12))
    assert canonical_args("SUB", mixed) == mixed and canonical_args("DIV", mixed) == mixed
    quantities = [5, 7, 11, 13]
    for op in ("ADD", "MUL"):  # same value in either order
        step = Step(op, (R(1), Q(3), C(2)))
        assert value_of(Step("ADD", (Q(1), Q(2))), Step(op, canonical_args(op, step.args)),
                        quantities=quantities) == value_of(
            Step("ADD", (Q(1), Q(2))), step, quantities=quantities)


def test_tenths_add_exactly():
    assert value_of(Step("ADD", (Q(0), Q(1))), quantities=[F("0.1"), F("0.2")]) == F(3, 10)


def test_division_is_exact():
    assert value_of(Step("DIV", (Q(0), C(3))), quantities=[F(1)]) == F(1, 3)
    assert value_of(Step("DIV", (C(1), C(3))), Step("MUL", (R(1), C(3)))) == 1


@pytest.mark.parametrize(
    ("op", "expected"),
    [("ADD", F(17)), ("SUB", F(7)), ("MUL", F(72)), ("DIV", F(2))],
)
def test_nary_left_folds(op, expected):
    assert value_of(Step(op, (Q(0), Q(1), Q(2))), quantities=[12, 3, 2]) == expected


def test_eight_arguments_allowed():
    assert value_of(Step("ADD", tuple(C(1) for _ in range(8)))) == 8


def test_mixed_arguments_and_trace():
    result = run(
        Step("MUL", (Q(0), C(60))),
        Step("ADD", (R(1), Q(1))),
        quantities=[F(1, 2), F(5)],
    )
    assert result.ok and result.value == 35
    first, second = result.steps
    assert first.op == "MUL" and first.result == 30
    assert first.args == [(Q(0), F(1, 2)), (C(60), F(60))]
    assert second.args == [(R(1), F(30)), (Q(1), F(5))]


def test_relative_references():
    result = run(
        Step("ADD", (Q(0), Q(1))),  # 3
        Step("MUL", (Q(0), Q(1))),  # 2
        Step("SUB", (R(2), R(1))),  # 3 - 2
        Step("ADD", (R(1), R(3))),  # 1 + 3
        quantities=[1, 2],
    )
    assert result.ok and [s.result for s in result.steps] == [3, 2, 1, 4]
    assert result.value == 4


def test_negative_and_zero_results_are_fine():
    assert value_of(Step("SUB", (Q(0), Q(1))), quantities=[2, 5]) == -3
    assert value_of(Step("SUB", (Q(0), Q(0))), quantities=[2]) == 0


def test_input_number_types():
    assert value_of(Step("ADD", (Q(0), Q(1))), quantities=[0.1, Decimal("0.2")]) == F(3, 10)


# --- templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("ACC_ADD", F(11) + F(12) + F(1, 4)),
        ("ACC_SUB", F(11) - F(12) - F(1, 4)),
        ("AVG", (F(11) + F(12) + F(1, 4)) / 3),
        ("DERIVED_MUL", F(12) * F(1, 4)),
    ],
)
def test_templates(template, expected):
    steps = [Step("ADD", (Q(0), C(1))), Step("MUL", (Q(1), C(2))), Step("DIV", (Q(2), C(4)))]
    result = run(*steps, Step(template), quantities=[10, 6, 1])
    assert result.ok, result.error
    assert result.value == expected
    trace = result.steps[-1]
    assert trace.op == template
    used = [F(12), F(1, 4)] if template == "DERIVED_MUL" else [F(11), F(12), F(1, 4)]
    assert [value for _, value in trace.args] == used
    assert all(arg.kind == "result" for arg, _ in trace.args)
    assert trace.args[-1][0] == R(1)


def test_templates_chain():
    steps = [Step("ADD", (Q(0), Q(0))), Step("ADD", (Q(1), Q(1))), Step("ACC_ADD"), Step("AVG")]
    assert value_of(*steps, quantities=[1, 2]) == F(2 + 4 + 6, 3)


# --- explicit errors -------------------------------------------------------------------

ERROR_CASES = [
    ((), [], "empty program"),
    ((Step("DIV", (Q(0), Q(1))),), [1, 0], "division by zero in step 0"),
    ((Step("ADD", (Q(0), Q(0))), Step("DIV", (R(1), C(2), Q(1)))), [1, 0], "division by zero"),
    ((Step("ADD", (Q(0), Q(0))), Step("ADD", (R(3), Q(0)))), [1], "unresolved reference R3"),
    ((Step("ADD", (R(1), Q(0))),), [1], "unresolved reference R1 in step 0"),
    ((Step("ADD", (Q(5), Q(0))),), [1], "quantity Q5 out of range"),
    ((Step("ADD", (Q(0), Q(1))),), [1, None], "quantity Q1 has no numeric value"),
    ((Step("ADD", (Q(0), Q(1))),), [1, "3"], "quantity Q1 has no numeric value"),
    ((Step("ADD", (Q(0), Q(1))),), [1, float("nan")], "quantity Q1 has no numeric value"),
    ((Step("ADD", (Q(0), Q(1))),), [1, float("inf")], "quantity Q1 has no numeric value"),
    ((Step("ADD", (Q(0), C(17))),), [1], "constant 17 not allowed"),
    ((Step("ADD", (Q(0), C(F(1, 3)))),), [1], "constant 1/3 not allowed"),
    ((Step("MUL", (Q(0), Q(0))), Step("MUL", (R(1), R(1)))), [10**5], "magnitude exceeds 1e15"),
    ((Step("ADD", (Q(0), Q(0))),), [10**400], "magnitude exceeds 1e15"),
    ((Step("ADD", (Q(0), Q(0))),), [10**16], "magnitude exceeds 1e15"),
    ((Step("ADD", (Q(0), Q(0))),), [F(1, 10**7)], "denominator exceeds 1e6"),
    ((Step("DIV", (Q(0), Q(1), Q(1))),), [1, 1001], "denominator exceeds 1e6"),
    ((Step("ADD", (Q(0), Q(0))),) * 17, [1], "too many steps"),
    ((Step("ADD", (Q(0),)),), [1], "ADD needs at least 2 arguments"),
    ((Step("MUL", ()),), [1], "MUL needs at least 2 arguments"),
    ((Step("ADD", (C(1),) * 9),), [], "ADD takes at most 8 arguments"),
    ((Step("FOO", (Q(0), Q(0))),), [1], "unknown operation FOO"),
    ((Step("add", (Q(0), Q(0))),), [1], "unknown operation add"),
    ((Step("ACC_ADD"),), [1], "ACC_ADD needs at least 2 previous results"),
    ((Step("ADD", (Q(0), Q(0))), Step("AVG")), [1], "AVG needs at least 2 previous results"),
    ((Step("ADD", (Q(0), Q(0))), Step("ADD", (Q(0), Q(0))), Step("AVG", (Q(0),))), [1],
     "AVG takes no arguments"),
    ((Step("ADD", (Q(0), Arg("template"))),), [1], "invalid argument kind template"),
    ((Step("ADD", (Q(0), Arg("quantity", -1))),), [1], "quantity Q-1 out of range"),
    ((Step("ADD", (Q(0), Arg("result", 0))),), [1], "unresolved reference R0"),
    ((Step("ADD", (Q(0), Arg("quantity", None))),), [1], "quantity Q? out of range"),
    ((Step("ADD", (Q(0), Arg("constant"))),), [1], "constant has no numeric value"),
    ((Step("ADD", (Q(0), "Q1")),), [1, 2], "argument is not an Arg"),
    (("ADD Q0 Q1",), [1, 2], "not a Step"),
    ("ADD Q0 Q1", [1, 2], "program must be a tuple"),
]


@pytest.mark.parametrize(("program", "quantities", "message"), ERROR_CASES)
def test_errors_are_explicit(program, quantities, message):
    result = execute(program, quantities)
    assert not result.ok
    assert result.value is None
    assert result.error is not None and message in result.error


def test_failed_result_keeps_earlier_steps():
    result = run(Step("ADD", (Q(0), Q(1))), Step("DIV", (R(1), Q(2))), quantities=[1, 2, 0])
    assert not result.ok and result.error == "division by zero in step 1"
    assert [trace.result for trace in result.steps] == [3]
    with pytest.raises(ExecutionError, match="division by zero"):
        result.unwrap()


def test_custom_constants_and_limits():
    assert value_of(Step("ADD", (Q(0), C(17))), quantities=[1], constants={F(17)}) == 18
    assert not run(Step("ADD", (Q(0), C(60))), quantities=[1], constants={F(17)}).ok
    small = Limits(max_steps=1, max_args=2, max_abs=100, max_denominator=10)
    assert value_of(Step("MUL", (Q(0), C(10))), quantities=[10], limits=small) == 100
    over = run(Step("MUL", (Q(0), C(10))), quantities=[11], limits=small)
    assert over.error == "magnitude exceeds 100 in step 0"
    assert "too many steps" in run(*[Step("ADD", (C(1), C(1)))] * 2, limits=small).error
    assert "at most 2 arguments" in run(Step("ADD", (C(1),) * 3), limits=small).error


def test_digit_guard_refuses_before_computing():
    # Generous magnitude bounds, tight digit cap: the product is refused on size alone.
    limits = Limits(max_abs=10**200, max_denominator=10**200, max_numerator_digits=60)
    big = F(10**50)
    result = run(Step("MUL", (Q(0), Q(0))), quantities=[big], limits=limits)
    assert not result.ok and "operands too large" in result.error
    assert value_of(Step("ADD", (Q(0), Q(0))), quantities=[big], limits=limits) == 2 * big


@pytest.mark.parametrize("bad", [{"max_steps": 0}, {"max_abs": -1}, {"max_args": True}])
def test_limits_validate(bad):
    with pytest.raises(ValueError):
        Limits(**bad)


def test_bad_limits_and_containers_do_not_raise():
    assert "limits" in execute((Step("ADD", (C(1), C(1))),), [], limits=None).error
    assert "sequence" in execute((Step("ADD", (Q(0), Q(0))),), None).error
    assert not execute((Step("ADD", (C(1), C(1))),), [], constants=None).ok


# --- data types and text -------------------------------------------------------------


def test_vocabulary():
    assert OPERATIONS == ("ADD", "SUB", "MUL", "DIV")
    assert TEMPLATES == ("ACC_ADD", "ACC_SUB", "AVG", "DERIVED_MUL")
    whole = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 24, 52, 60, 100, 365, 1000)
    expected = {F(1, 100), F(1, 2), *map(F, whole)}
    assert DEFAULT_CONSTANTS == frozenset(expected)


def test_arg_constructors_and_text():
    assert Q(0) == Arg("quantity", index=0) and Q(0).to_text() == "Q0"
    assert R(1) == Arg("result", index=1) and R(2).to_text() == "R2"
    assert C(60).value == F(60) and isinstance(C(60).value, Fraction)
    assert C(60).to_text() == "C60"
    assert Step("ADD", (Q(0), R(1), C(F(1, 2)))).to_text() == "ADD Q0 R1 C1/2"
    for bad in (lambda: Q(-1), lambda: R(0), lambda: C("3"), lambda: C(True)):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize(
    "value", [F(60), F(1, 2), F(1, 3), F(-5, 4), F(1, 10), F(123, 100), F(1, 1024), F(-7)]
)
def test_constant_text_round_trips(value):
    text = C(value).to_text()
    assert text.startswith("C") and parse_number(text[1:]) == value


@pytest.mark.parametrize(
    ("value", "text"), [(F(7, 2), "7/2"), (F(12), "12"), (F(-1, 3), "-1/3"), (F(0), "0")]
)
def test_format_fraction(value, text):
    assert format_fraction(value) == text


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", F(12)), ("-3", F(-3)), ("0.25", F(1, 4)), ("1/3", F(1, 3)), ("-1/2", F(-1, 2)),
     ("007", F(7)), ("1000", F(1000))],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "1e3", "1E3", " 1", "1 ", "+1", "1.", ".5", "1/0", "1,000", "½", "١٢", "--1", "1/2/3",
     "nan", "inf", "0x10", "1" * 41, None, 12],
)
def test_parse_number_rejects(text):
    assert parse_number(text) is None


# --- properties ------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(
    quantities=st.lists(st.integers(min_value=-50, max_value=50), min_size=1, max_size=6),
    data=st.data(),
)
def test_add_mul_programs_match_int_arithmetic(quantities, data):
    n_steps = data.draw(st.integers(min_value=1, max_value=5))
    program, expected = [], []
    for number in range(n_steps):
        op = data.draw(st.sampled_from(["ADD", "MUL"]))
        sources = st.sampled_from(
            [("q", i) for i in range(len(quantities))] + [("r", k) for k in range(1, number + 1)]
        )
        picked = data.draw(st.lists(sources, min_size=2, max_size=3))
        args = tuple(Q(i) if kind == "q" else R(i) for kind, i in picked)
        values = [quantities[i] if kind == "q" else expected[-i] for kind, i in picked]
        expected.append(reduce(add if op == "ADD" else mul, values))
        program.append(Step(op, args))
    result = execute(tuple(program), [F(q) for q in quantities])
    if all(abs(v) <= 10**15 for v in expected):
        assert result.ok, result.error
        assert result.value == expected[-1]
        assert [trace.result for trace in result.steps] == expected
    else:
        assert not result.ok and "magnitude" in result.error


hostile_numbers = st.one_of(
    st.none(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 10**15, 10**15 + 1, 0]),
    st.fractions(max_denominator=10**9),
    st.builds(lambda n, e: F(n, 10**e), st.integers(), st.integers(0, 40)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["3", b"3", True, object(), [1]]),
)

hostile_args = st.one_of(
    st.builds(Arg, st.just("quantity"), st.integers(-3, 12)),
    st.builds(Arg, st.just("result"), st.integers(-2, 20)),
    st.builds(lambda v: Arg("constant", value=v), hostile_numbers),
    st.sampled_from(sorted(DEFAULT_CONSTANTS)).map(C),
    st.builds(Arg, st.sampled_from(["template", "QUANTITY", "", None]), st.integers(0, 3)),
    st.builds(Arg, st.just("quantity"), st.sampled_from([None, True, 2**200, 1.0, "0"])),
    st.sampled_from(["Q0", None, 3, Q]),
)

hostile_ops = st.one_of(
    st.sampled_from(OPERATIONS + TEMPLATES),
    st.text(max_size=40),
    st.sampled_from([None, 3, ("ADD",), "ADD ", "ACC_ADD\x00"]),
)

hostile_steps = st.one_of(
    st.builds(Step, hostile_ops, st.lists(hostile_args, max_size=10).map(tuple)),
    st.builds(Step, st.sampled_from(TEMPLATES)),
    st.builds(Step, st.sampled_from(OPERATIONS), st.sampled_from([None, "Q0 Q1", 5])),
    st.sampled_from([None, "ADD Q0 Q1", ("ADD", (Q(0), Q(1)))]),
)


@settings(max_examples=200, deadline=None)
@given(
    program=st.lists(hostile_steps, max_size=20).map(tuple),
    quantities=st.lists(hostile_numbers, max_size=10),
)
def test_hostile_programs_never_raise(program, quantities):
    result = execute(program, quantities)
    assert isinstance(result, ExecutionResult)
    assert result.ok == (result.error is None)
    if result.ok:
        assert isinstance(result.value, Fraction)
        assert abs(result.value) <= 10**15 and result.value.denominator <= 10**6
        assert result.value == result.steps[-1].result
    else:
        assert result.value is None and result.error
        assert "internal error" not in result.error


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(st.sampled_from(OPERATIONS + TEMPLATES), min_size=1, max_size=16),
    quantities=st.lists(
        st.one_of(
            st.integers(-(10**15), 10**15),
            st.fractions(min_value=-(10**6), max_value=10**6, max_denominator=10**6),
        ),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
def test_well_formed_programs_stay_bounded(ops, quantities, data):
    program = []
    for number, op in enumerate(ops):
        if op in TEMPLATES:
            program.append(Step(op))
            continue
        choices = [Q(i) for i in range(len(quantities))] + [R(k) for k in range(1, number + 1)]
        choices += [C(c) for c in sorted(DEFAULT_CONSTANTS)]
        args = data.draw(st.lists(st.sampled_from(choices), min_size=2, max_size=8))
        program.append(Step(op, tuple(args)))
    result = execute(tuple(program), quantities)
    assert result.ok == (result.error is None)
    assert len(result.steps) == (len(program) if result.ok else len(result.steps))
    for trace in result.steps:
        assert abs(trace.result) <= 10**15 and trace.result.denominator <= 10**6
    if not result.ok:
        assert "internal error" not in result.error


@settings(max_examples=100, deadline=None)
@given(st.fractions(max_denominator=10**8))
def test_format_and_parse_round_trip(value):
    for text in (format_fraction(value), C(value).to_text()[1:]):
        assert parse_number(text) == (value if len(text) <= 40 else None)


def test_connected_programs_use_every_result() -> None:
    q = [Fraction(3), Fraction(4), Fraction(5)]
    loose = (Step("ADD", (Arg.quantity(0), Arg.quantity(1))),
             Step("MUL", (Arg.quantity(1), Arg.quantity(2))))
    assert execute(loose, q).value == 20  # allowed unless asked for
    result = execute(loose, q, connected=True)
    assert not result.ok and "step 0 is never used" in result.error
    chained = (Step("ADD", (Arg.quantity(0), Arg.quantity(1))),
               Step("MUL", (Arg.result(1), Arg.quantity(2))))
    assert execute(chained, q, connected=True).value == 35
    summed = (*loose, Step("ACC_ADD", ()))
    assert execute(summed, q, connected=True).value == 27
