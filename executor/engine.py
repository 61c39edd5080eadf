"""Execute a program exactly over the problem's quantities; never raises."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from fractions import Fraction

from .arithmetic import check_value, fold
from .limits import Limits
from .numbers import format_literal, to_fraction
from .program import DEFAULT_CONSTANTS, OPERATIONS, TEMPLATES, Arg, Program, Step
from .results import ExecutionError, ExecutionResult, StepTrace

MIN_TEMPLATE_RESULTS = 2
DEFAULT_LIMITS = Limits()
_MAX_NAME_CHARS = 32


def _int_text(value: int) -> str:
    """An index as text without ever converting a huge int to decimal."""
    return str(value) if value.bit_length() <= 64 else "(huge)"


def _name_text(value: object) -> str:
    """A short, safe rendering of an operation name or argument kind."""
    if isinstance(value, str):
        return value if len(value) <= _MAX_NAME_CHARS else value[:_MAX_NAME_CHARS] + "..."
    return f"<{type(value).__name__}>"


def _is_huge(value: Fraction, limits: Limits) -> bool:
    """Too large to even hash or print cheaply."""
    return max(value.numerator.bit_length(), value.denominator.bit_length()) > limits.max_bits


def _value_text(value: Fraction, limits: Limits) -> str:
    return "(huge)" if _is_huge(value, limits) else format_literal(value)


def _index(arg: Arg) -> int | None:
    index = arg.index
    return index if isinstance(index, int) and not isinstance(index, bool) else None


class _Context:
    """Everything a step's arguments can refer to."""

    def __init__(
        self,
        quantities: Sequence[Fraction | None],
        constants: Collection[Fraction],
        limits: Limits,
    ) -> None:
        self.quantities = quantities
        self.constants = constants
        self.limits = limits
        self.results: list[Fraction] = []
        self.consumed: set[int] = set()  # indices of results some later step used

    def resolve(self, arg: object, where: str) -> Fraction:
        """The exact value of one argument, or raise :class:`ExecutionError`."""
        if not isinstance(arg, Arg):
            raise ExecutionError(f"argument is not an Arg ({_name_text(arg)}) {where}")
        if arg.kind == "quantity":
            return self._quantity(arg, where)
        if arg.kind == "result":
            index = _index(arg)
            if index is None or not 1 <= index <= len(self.results):
                text = _int_text(index) if index is not None else "?"
                raise ExecutionError(f"unresolved reference R{text} {where}")
            self.consumed.add(len(self.results) - index)
            return self.results[-index]
        if arg.kind == "constant":
            return self._constant(arg, where)
        raise ExecutionError(f"invalid argument kind {_name_text(arg.kind)} {where}")

    def _quantity(self, arg: Arg, where: str) -> Fraction:
        index = _index(arg)
        if index is None or not 0 <= index < len(self.quantities):
            text = _int_text(index) if index is not None else "?"
            raise ExecutionError(f"quantity Q{text} out of range {where}")
        value = to_fraction(self.quantities[index])
        if value is None:
            raise ExecutionError(f"quantity Q{index} has no numeric value {where}")
        return check_value(value, self.limits, where, f"quantity Q{index} ")

    def _constant(self, arg: Arg, where: str) -> Fraction:
        value = to_fraction(arg.value)
        if value is None:
            raise ExecutionError(f"constant has no numeric value {where}")
        if _is_huge(value, self.limits) or value not in self.constants:
            raise ExecutionError(
                f"constant {_value_text(value, self.limits)} not allowed {where}"
            )
        return check_value(value, self.limits, where, "constant ")


def _run_operation(step: Step, context: _Context, where: str) -> StepTrace:
    args = step.args
    if not isinstance(args, (tuple, list)):
        raise ExecutionError(f"arguments must be a tuple {where}")
    if len(args) < 2:
        raise ExecutionError(f"{step.op} needs at least 2 arguments {where}")
    if len(args) > context.limits.max_args:
        raise ExecutionError(
            f"{step.op} takes at most {context.limits.max_args} arguments {where}"
        )
    resolved = [(arg, context.resolve(arg, where)) for arg in args]
    result = fold(step.op, [value for _, value in resolved], context.limits, where)
    return StepTrace(op=step.op, args=resolved, result=result)


def _run_template(step: Step, context: _Context, where: str) -> StepTrace:
    args = step.args
    if not isinstance(args, (tuple, list)) or len(args) != 0:
        raise ExecutionError(f"{step.op} takes no arguments {where}")
    results = context.results
    if len(results) < MIN_TEMPLATE_RESULTS:
        raise ExecutionError(
            f"{step.op} needs at least {MIN_TEMPLATE_RESULTS} previous results {where}"
        )
    limits = context.limits
    if step.op == "DERIVED_MUL":
        used = results[-2:]
        result = fold("MUL", used, limits, where)
    else:
        used = list(results)
        if step.op == "ACC_SUB":
            result = fold("SUB", used, limits, where)
        else:
            result = fold("ADD", used, limits, where)
            if step.op == "AVG":
                result = fold("DIV", [result, Fraction(len(used))], limits, where)
    count = len(results)
    start = count - len(used)
    context.consumed.update(range(start, count))
    traced = [(Arg.result(count - i), results[i]) for i in range(start, count)]
    return StepTrace(op=step.op, args=traced, result=result)


def _run(
    program: Program, context: _Context, traces: list[StepTrace], connected: bool = False
) -> Fraction:
    limits = context.limits
    if not isinstance(program, (tuple, list)):
        raise ExecutionError("program must be a tuple of steps")
    if len(program) == 0:
        raise ExecutionError("empty program")
    if len(program) > limits.max_steps:
        raise ExecutionError(f"too many steps ({len(program)} > {limits.max_steps})")
    if not isinstance(context.quantities, Sequence) or isinstance(context.quantities, str):
        raise ExecutionError("quantities must be a sequence")
    for number, step in enumerate(program):
        where = f"in step {number}"
        if not isinstance(step, Step):
            raise ExecutionError(f"not a Step ({_name_text(step)}) {where}")
        if step.op in OPERATIONS:
            trace = _run_operation(step, context, where)
        elif step.op in TEMPLATES:
            trace = _run_template(step, context, where)
        else:
            raise ExecutionError(f"unknown operation {_name_text(step.op)} {where}")
        traces.append(trace)
        context.results.append(trace.result)
    if connected:
        unused = [k for k in range(len(program) - 1) if k not in context.consumed]
        if unused:
            raise ExecutionError(f"result of step {unused[0]} is never used")
    return context.results[-1]


def execute(
    program: Program,
    quantities: Sequence[Fraction | None],
    *,
    constants: Collection[Fraction] = DEFAULT_CONSTANTS,
    limits: Limits = DEFAULT_LIMITS,
    connected: bool = False,
) -> ExecutionResult:
    """Run ``program`` exactly; the answer is the last step's result.

    ``connected``: every step's result but the last must be used by a later step (a step
    the answer does not depend on makes the program invalid).

    Never raises: an invalid program or input gives ``ok=False`` with an explicit
    ``error`` (steps are numbered from 0) and the trace of the steps run before it.
    """
    traces: list[StepTrace] = []
    try:
        if not isinstance(limits, Limits):
            return ExecutionResult(False, None, traces, "limits must be a Limits")
        value = _run(program, _Context(quantities, constants, limits), traces, connected)
    except ExecutionError as exc:
        return ExecutionResult(False, None, traces, str(exc))
    except Exception as exc:  # hostile inputs (odd containers, broken __eq__ ...)
        return ExecutionResult(False, None, traces, f"internal error: {type(exc).__name__}")
    return ExecutionResult(True, value, traces, None)

