"""The Solver: tokenize → segment → search → classify → extract → execute → score, or,
for a program writer's set, tokenize → segment → write (``write.py``).

Each stage lives in its own module (``classify``, ``extract``, ``readings``, ``choose``,
``render``); the solver holds the loaded specialists and runs the stages in order.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mycelium.executor.numbers import parse_number

from . import search
from .artifacts import resolve_artifacts
from .batching import KV_BUDGET_BYTES, MAX_ROWS_PER_CALL, Specialist
from .choose import choose
from .classify import CLASSIFY, GroupBatch, GroupRow
from .errors import ArtifactsError
from .extract import BEAM_DEPTH, ExtractRow, branch_first_token, extract
from .manifest import Manifest, load_manifest, model_kind, safe_member
from .models import DecoderState
from .readings import add_readings, distinct_readings, plan_extractions
from .render import describe, program_record
from .results import SolveResult, Span
from .runners import ClassifierRunner, Runners, onnx_runners
from .segments import decode_spans
from .sessions import cache_device, choose_provider
from .spec import SolverSpec, override_search
from .stats import STAGES, Stats, timed
from .templates import marked_problem
from .tokenization import TextTokenizer
from .trace import Readings, Variant
from .write import load_writer, write
from .writer import ProgramWriter

MAX_SPANS = 32  # quantities kept per problem (Q indices are below this)


class Solver:
    """Solve math word problems with exported specialists; never imports torch."""

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        provider: str,
        threads: int | None,
        runners: Runners | None = None,
        io_binding: bool | None = None,
        search: Iterable[str] = (),
    ):
        """Build from a validated manifest; ``runners`` replaces the onnxruntime ones
        (the PyTorch baseline of the benchmarks uses this; serving never does)."""
        self.folder = folder
        self.manifest = manifest
        self.provider = provider
        self.spec = SolverSpec.from_dict(manifest.mycelium)
        if search:
            self.spec = replace(self.spec, search=override_search(self.spec.search, search))
        self.constants = frozenset(
            value for value in (parse_number(text) for text in self.spec.constants)
            if value is not None
        )
        self.stats = Stats()
        tokenizers: dict[str, TextTokenizer] = {}
        self.tokenizers: dict[str, TextTokenizer] = {}
        for name, model in manifest.models.items():
            if model.tokenizer not in tokenizers:
                tokenizers[model.tokenizer] = TextTokenizer(safe_member(folder, model.tokenizer))
            self.tokenizers[name] = tokenizers[model.tokenizer]
        special = self.spec.special_tokens
        # the exporter records each model's pad id (an encoder's own tokenizer names it
        # differently); older manifests are resolved by the token's name
        self.pad_ids = {}
        for name, tok in self.tokenizers.items():
            recorded = manifest.models[name].special_tokens.get("pad")
            self.pad_ids[name] = recorded if recorded is not None else tok.token_id(special["pad"])
        runners = runners or onnx_runners(folder, manifest, self.spec, provider, threads,
                                          self.pad_ids, cache_device(provider, io_binding))
        self.segmenter_labels = tuple(manifest.models["segmenter"].labels or ())
        self.writer: ProgramWriter | None = None
        if manifest.writes_programs:  # a segmenter and a program writer (runtime/write.py)
            self.segmenter, writer = runners
            entry = manifest.models["writer"]
            self.writer = load_writer(writer, safe_member(folder, entry.tokenizer), entry,
                                      self.spec.writer)
            return
        self.eos_id = self.tokenizers["extractor"].token_id(special["eos"])
        self.segmenter, self.classifier, self.extractor = runners
        self.classifier_kind = model_kind("classifier", manifest.models["classifier"])
        self.operations = tuple(manifest.models["classifier"].labels or ())

    @classmethod
    def load(
        cls,
        artifacts: str | os.PathLike[str] | None = None,
        provider: str = "auto",
        *,
        threads: int | None = None,
        verify: bool = True,
        io_binding: bool | None = None,
        search: Iterable[str] = (),
    ) -> Solver:
        """Load an artifacts folder (default: $MYCELIUM_ARTIFACTS or the embedded default).

        ``io_binding``: keep decoder caches as onnxruntime tensors between calls (on the
        GPU for CUDA/TensorRT, where it is on by default; off by default on CPU).
        ``search``: ``KEY=VALUE`` overrides of the artifacts' search settings.
        """
        folder = resolve_artifacts(artifacts)
        manifest = load_manifest(folder, verify=verify)
        return cls(
            folder, manifest, choose_provider(provider), threads,
            io_binding=io_binding, search=search,
        )

    def specialist(self, name: str) -> Specialist:
        """The named model (segmenter, classifier, extractor) as the stages use it."""
        return Specialist(name, getattr(self, name), self.tokenizers[name], self.stats)

    # ------------------------------------------------------------------ stages
    def segment(self, questions: list[str]) -> list[list[Span]]:
        """C1: every quantity span of each question, with its used-probability."""
        with timed(self.stats, "tokenize"):
            encoded = self.tokenizers["segmenter"].encode_batch(
                questions, self.spec.max_problem_tokens
            )
        with timed(self.stats, "segment"):
            probs = self.segmenter.label_probs([enc.ids for enc in encoded])
            self.stats.tokens["segmenter"] += sum(len(enc.ids) for enc in encoded)
            return [
                decode_spans(q, enc, p, self.segmenter_labels)[:MAX_SPANS]
                for q, enc, p in zip(questions, encoded, probs, strict=True)
            ]

    _segment = segment  # the name scripts written before `segment` call

    def prefix_states(self, model: str, texts: list[str]) -> tuple[DecoderState, np.ndarray]:
        """A decoder specialist's cache after each text (row ``i``) and its logits."""
        return self.specialist(model).prefix_states(texts, self.spec.max_problem_tokens)

    def classify(self, questions: list[str], spans: list[list[Span]], rows: list[GroupRow],
                 prefixes: list[str] | None = None) -> np.ndarray:
        """C2: operation log-probabilities (R, labels) of (problem index, group items)
        rows, read the way the classifier's kind reads them; ``prefixes``: each problem
        as a decoder classifier reads it (default: ``marked_problem`` of its spans)."""
        if prefixes is None:
            prefixes = self.marked_problems(questions, spans)
        batch = GroupBatch(questions, spans, rows, prefixes)
        return CLASSIFY[self.classifier_kind](self.specialist("classifier"), batch, self.spec,
                                              len(self.operations))

    def extract(self, prefix: DecoderState, rows: list[ExtractRow],
                branches: int) -> list[list[tuple[str, float]]]:
        """C3: ``branches`` argument readings (text, log-probability) per (problem, group,
        operation) row; ``prefix``: :meth:`prefix_states` of the extractor."""
        return extract(self.specialist("extractor"), prefix, rows, branches, self.spec,
                       self.eos_id)

    def choose(self, id: Any, spans: list[Span], sets: list[search.UsedSet],
               variants: Readings, trace: bool = False,
               no_learned_step: float | None = None) -> SolveResult:
        """Execute the best-scored candidates of one problem and pick its answer
        (see :func:`mycelium.runtime.choose.choose`)."""
        return choose(id, spans, sets, variants, self.spec, self.constants, trace,
                      no_learned_step)

    def marked_problems(self, questions: list[str], spans: list[list[Span]]) -> list[str]:
        """Each problem with its quantities marked, as the decoders read it."""
        return [
            marked_problem(self.spec.templates, q, [(span.start, span.end) for span in s])
            for q, s in zip(questions, spans, strict=True)
        ]

    # ------------------------------------------------------------------ solve
    def solve(
        self,
        questions: Sequence[str],
        ids: Sequence[Any] | None = None,
        *,
        spans: Sequence[list[Span]] | None = None,
        trace: bool = False,
    ) -> list[SolveResult]:
        """Solve a batch of problem texts; one result per question, in order.

        ``spans`` replaces the segmenter's output (the gold-span *oracle* of
        `diagnose`; never used when serving). ``trace`` keeps every group's model
        readings and the valid candidates' values on ``result.trace``.
        """
        questions = list(questions)
        ids = list(ids) if ids is not None else list(range(len(questions)))
        if not questions:
            return []
        self.stats.problems += len(questions)
        spans = [list(s) for s in spans] if spans is not None else self.segment(questions)
        if self.writer is not None:  # the writer writes whole programs: no span-group search
            assert self.spec.writer is not None  # load_writer checked it
            before = self.writer.positions
            try:
                with timed(self.stats, "write"):
                    return write(self.writer, self.spec.writer, ids, questions, spans,
                                 tuple(sorted(self.constants)), trace)
            finally:
                self.stats.tokens["writer"] += self.writer.positions - before

        with timed(self.stats, "search"):
            sets = [
                search.used_sets([span.used_prob for span in s], self.spec.search) for s in spans
            ]
            groups = [search.unique_groups(u, self.spec.search) for u in sets]
            rows = [(p, [(i, spans[p][i].text) for i in group])
                    for p in range(len(questions)) for group in groups[p]]
            prefixes = self.marked_problems(questions, spans)
        with timed(self.stats, "classify"):
            op_scores = self.classify(questions, spans, rows, prefixes)
        with timed(self.stats, "search"):
            plan = plan_extractions(op_scores, self.operations, groups, rows, self.spec.search)
        variants: list[Readings] = [defaultdict(list) for _ in questions]
        if plan.rows:
            with timed(self.stats, "extract"):
                prefix, _ = self.prefix_states("extractor", prefixes)
        for branches, keyed in plan.rows.items():
            with timed(self.stats, "extract"):
                extractions = self.extract(prefix, [row for row, _ in keyed], branches)
            add_readings(variants, [key for _, key in keyed], extractions)
        with timed(self.stats, "execute"):
            return [
                self.choose(ids[p], spans[p], sets[p], variants[p], trace,
                            plan.no_learned_step[p])
                for p in range(len(questions))
            ]


__all__ = [
    "Solver", "SolveResult", "Span", "describe", "program_record", "ArtifactsError",
    # the names callers imported from here before the stages had modules of their own
    "BEAM_DEPTH", "KV_BUDGET_BYTES", "MAX_ROWS_PER_CALL", "STAGES", "ClassifierRunner",
    "Runners", "Stats", "Variant", "branch_first_token", "distinct_readings",
]
