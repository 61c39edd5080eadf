"""The program writer's stage, for a program writer's artifacts set (``manifest.model_kind``
``program_writer``): the quantities the segmenter found become the writer's sources, a
grammar beam (``writer.grammar_beams``) writes whole programs while the executor computes
and validates every step, and the answer is the value whose finished programs hold the
most probability.

**Confidence** is the winning value's share of the problem's finished valid programs'
probability: a softmax over their beam log-probabilities, pooled per value
(``scorer.pick_index``, temperature 1, no answer prior). It is not calibrated: it says
nothing of the problems whose right answer no finished program reaches, so it overstates.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from mycelium.executor import Arg, ExecutionResult, Step, execute

from .equations import END, Sources, WriterState, advance, char_ids
from .errors import ArtifactsError, MyceliumError
from .manifest import ModelSpec
from .models import DecoderRunner
from .render import program_record
from .results import SolveResult, Span
from .scorer import pick_index
from .spec import WriterSettings
from .trace import SolveTrace
from .writer import Program, ProgramWriter


def load_writer(runner: DecoderRunner, tokenizer: Path, model: ModelSpec,
                settings: WriterSettings | None) -> ProgramWriter:
    """The writer of a manifest entry: its labels are the grammar's characters then
    ``END``, each character one token of its tokenizer; ``settings`` give the prompt."""
    labels = tuple(model.labels or ())
    if settings is None:
        raise ArtifactsError("manifest: a program writer's set needs mycelium.writer")
    if labels[-1:] != (END,) or not all(len(label) == 1 for label in labels[:-1]):
        raise ArtifactsError("manifest: models.writer.labels must be single characters "
                             f"followed by {END!r}")
    alphabet = "".join(labels[:-1])
    try:
        vocabulary = Tokenizer.from_file(str(tokenizer))
        ids = (*char_ids(vocabulary, alphabet), model.special_tokens["eos"])
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ArtifactsError(f"artifacts: the writer's tokenizer: {exc}") from None
    return ProgramWriter(runner, vocabulary, settings.prompt, alphabet, ids)


def write(writer: ProgramWriter, settings: WriterSettings, ids: Sequence[Any],
          questions: Sequence[str], spans: Sequence[list[Span]],
          constants: tuple[Fraction, ...], trace: bool = False) -> list[SolveResult]:
    """One result per problem, in order: the beams of ``settings.problems_per_call``
    problems advance together (their KV caches bounded), then each problem's answer is
    chosen. A prompt over ``settings.max_prompt_tokens`` tokens is answered with an error
    record (its cache would not be bounded), the others are solved."""
    out: dict[int, SolveResult] = {}
    fits: list[int] = []
    for n, question in enumerate(questions):
        length = len(writer.prompt_ids(question))
        if length > settings.max_prompt_tokens:
            out[n] = SolveResult(id=ids[n], spans=spans[n],
                                 error=f"the writer's prompt is {length} tokens, over "
                                       f"max_prompt_tokens {settings.max_prompt_tokens}")
        else:
            fits.append(n)
    size = settings.problems_per_call
    for at in range(0, len(fits), size):
        chunk = fits[at:at + size]
        kept = [[i for i, span in enumerate(spans[n]) if span.value is not None]
                for n in chunk]
        sources = [Sources(tuple(spans[n][i].value for i in k), constants)  # type: ignore[misc]
                   for n, k in zip(chunk, kept, strict=True)]
        programs = writer.beams([questions[n] for n in chunk], sources, settings.beam,
                                settings.max_chars)
        for k, (n, found) in enumerate(zip(chunk, programs, strict=True)):
            out[n] = choose_written(ids[n], spans[n], found, sources[k], kept[k], trace)
    return [out[n] for n in range(len(questions))]


def executed_program(text: str, sources: Sources, kept: list[int], spans: list[Span]
                     ) -> ExecutionResult:
    """The program a finished text names, replayed through the grammar and executed over
    the problem's spans (each quantity argument pointing at its span)."""
    state, pending = WriterState(), ""
    for char in text:
        if pending:  # a character the executor wrote (a result, the newline)
            pending = pending[1:]
            continue
        moved = advance(state, char, sources)
        if moved is None:
            raise ValueError(f"the writer's program {text!r} does not replay")
        state, pending = moved
    steps = tuple(
        Step(step.op, tuple(Arg.quantity(kept[a.index]) if a.kind == "quantity"
                            and a.index is not None else a for a in step.args))
        for step in state.steps)
    return execute(steps, [span.value for span in spans], constants=sources.constants,
                   connected=True)


def choose_written(id: Any, spans: list[Span], programs: list[Program], sources: Sources,
                   kept: list[int], trace: bool = False) -> SolveResult:
    """The answer of one problem from its finished valid programs (best first)."""
    debug = None
    if trace:
        debug = SolveTrace(
            valid_values=[answer for answer, _, _ in programs],
            candidate_programs=[program_record(executed_program(text, sources, kept, spans),
                                               spans) for _, _, text in programs],
            programs_written=True)
    if not programs:
        return SolveResult(id=id, error="no valid candidate program", spans=spans,
                           trace=debug)
    index, share = pick_index([answer for answer, _, _ in programs],
                              [score for _, score, _ in programs])
    result = executed_program(programs[index][2], sources, kept, spans)
    if not result.ok or result.value != programs[index][0]:
        raise MyceliumError(f"the writer's program {programs[index][2]!r} re-executes to "
                            f"{result.value}, not {programs[index][0]}")
    return SolveResult.from_value(id, result.value, program=program_record(result, spans),
                                  confidence=share, spans=spans, trace=debug)
