"""A result as JSON (the executed program) and as text (`mycelium-rt solve --text`)."""

from __future__ import annotations

from typing import Any

from mycelium.executor import ExecutionResult, format_fraction

from .results import SolveResult, Span


def program_record(result: ExecutionResult, spans: list[Span]) -> list[dict[str, Any]]:
    """The executed steps as JSON: op, each argument with its source, and the result."""
    out = []
    for number, trace in enumerate(result.steps):
        args = []
        for arg, value in trace.args:
            item: dict[str, Any] = {"source": arg.kind, "value": format_fraction(value)}
            if arg.kind == "quantity" and arg.index is not None and arg.index < len(spans):
                span = spans[arg.index]
                item.update(index=arg.index, text=span.text, span=[span.start, span.end])
            elif arg.kind == "result" and arg.index is not None:
                item["step"] = number - arg.index
            args.append(item)
        out.append({"op": trace.op, "args": args, "result": format_fraction(trace.result)})
    return out


def describe(result: SolveResult) -> str:
    """A readable rendering of a result and its program (for `solve --text`)."""
    if result.error:
        return f"error: {result.error}"
    lines = [f"answer: {result.answer_exact}  (confidence {result.confidence:.2f})"]
    for number, step in enumerate(result.program):
        parts = []
        for arg in step["args"]:
            if arg["source"] == "quantity":
                parts.append(f'"{arg["text"]}"@{arg["span"][0]}={arg["value"]}')
            elif arg["source"] == "result":
                parts.append(f'step{arg["step"]}={arg["value"]}')
            else:
                parts.append(f'{arg["source"]}:{arg["value"]}')
        lines.append(f"  step{number}: {step['op']}({', '.join(parts)}) = {step['result']}")
    return "\n".join(lines)
