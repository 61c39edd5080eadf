"""The Solver: tokenize → segment → search → classify → extract → execute → score."""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mycelium.executor import (
    Arg,
    ExecutionResult,
    Step,
    canonical_args,
    execute,
    format_fraction,
)
from mycelium.executor.numbers import parse_number

from . import search
from .artifacts import resolve_artifacts
from .calibration import calibration_inputs
from .errors import ArtifactsError
from .grammar import parse_args
from .manifest import Manifest, load_manifest, safe_member
from .models import (
    DecoderRunner,
    DecoderState,
    EncoderClassifierRunner,
    SegmenterRunner,
    SpanGroupClassifierRunner,
    log_softmax,
    top_k,
)
from .ranking import best_first
from .results import SolveResult, Span
from .scorer import Scored, pick_answer
from .segments import decode_spans
from .sessions import (
    ShapeLimits,
    cache_device,
    choose_provider,
    engine_cache_dir,
    make_session,
    shape_profiles,
)
from .spec import REJECT, SolverSpec, group_breadth, override_search
from .templates import classifier_suffix, extractor_suffix, group_pair, marked_problem
from .tokenization import GroupedProblem, TextTokenizer, group_tokens, span_tokens
from .verifier import (
    CandidateInfo,
    StepParts,
    candidate_features,
    log_one_minus_exp,
    tail_agreement,
    with_pool_features,
)

STAGES = ("tokenize", "segment", "search", "classify", "extract", "execute")
MAX_ROWS_PER_CALL = 256  # decoder rows per onnxruntime call
ENCODER_ROWS_PER_CALL = 64  # encoder classifier rows per call (length-sorted: little padding)
GROUP_SLOTS = 64  # span groups per row of a span-group classifier (more: the problem repeats)
GROUP_CELLS_PER_CALL = 2**17  # rows x group slots x tokens per span-group classifier call
KV_BUDGET_BYTES = 512 * 2**20  # cache bytes per decoder call (a 0.5B shape gets fewer rows)
MAX_EXECUTIONS_FACTOR = 8  # executions tried per problem: this times max_candidates
MAX_SPANS = 32  # quantities kept per problem (Q indices are below this)
# arg_beam searches the first two argument tokens with a beam and continues each beam
# greedily: on p46's 1,127 dev steps its best three hold the gold arguments as often as a
# full beam's (881 vs 880) at 70 % of its decode time (a beam step gathers the cache)
BEAM_DEPTH = 2


ClassifierRunner = DecoderRunner | EncoderClassifierRunner | SpanGroupClassifierRunner
Runners = tuple[SegmenterRunner, ClassifierRunner, DecoderRunner]


@dataclass
class Variant:
    """One (group, operation) reading with its parsed arguments and log-probability."""

    op: str
    args: tuple[Arg, ...] | None  # None when the extractor's output is off-grammar
    logprob: float
    text: str
    # the parts of ``logprob``: log P(the group is a step) (0 without a reject label) and
    # log P(this operation | a step), from the classifier; the rest is the extractor's
    is_step_logprob: float = 0.0
    op_logprob: float = 0.0

    @property
    def parts(self) -> StepParts:
        """Where this reading's log-probability comes from (for the answer scorer)."""
        return StepParts(self.is_step_logprob, self.op_logprob,
                         self.logprob - self.is_step_logprob - self.op_logprob)


@dataclass
class Stats:
    """Per-stage seconds and token positions computed, accumulated over calls."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    tokens: dict[str, int] = field(
        default_factory=lambda: {"segmenter": 0, "classifier": 0, "extractor": 0}
    )
    problems: int = 0
    extractor_rows: int = 0  # (group, operation) readings decoded, times their branches

    def reset(self) -> None:
        """Zero every counter."""
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.tokens = {"segmenter": 0, "classifier": 0, "extractor": 0}
        self.problems = 0
        self.extractor_rows = 0


class _Timer:
    def __init__(self, stats: Stats, stage: str):
        self.stats, self.stage = stats, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.stats.seconds[self.stage] += time.perf_counter() - self.start


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
        self.eos_id = self.tokenizers["extractor"].token_id(special["eos"])
        runners = runners or self._onnx_runners(threads, cache_device(provider, io_binding))
        self.segmenter, self.classifier, self.extractor = runners
        self.operations = tuple(manifest.models["classifier"].labels or ())
        self.segmenter_labels = tuple(manifest.models["segmenter"].labels or ())

    def _onnx_runners(self, threads: int | None, device: str | None) -> Runners:
        limits = ShapeLimits(
            rows=MAX_ROWS_PER_CALL,
            problem_tokens=self.spec.max_problem_tokens,
            new_tokens=self.spec.max_suffix_tokens + self.spec.max_new_tokens,
            group_slots=GROUP_SLOTS,
        )
        sessions = {}
        for name, model in self.manifest.models.items():
            tensorrt = None
            if self.provider == "tensorrt":
                tensorrt = {**shape_profiles(model, limits),
                            "trt_engine_cache_path": str(engine_cache_dir(model))}
            path = safe_member(self.folder, model.file)
            sessions[name] = make_session(path, self.provider, threads, tensorrt)
        models = self.manifest.models
        classifier: ClassifierRunner
        if models["classifier"].kv_cache is not None:
            classifier = DecoderRunner(sessions["classifier"], models["classifier"],
                                       self.pad_ids["classifier"], device)
        elif models["classifier"].reads_span_groups:
            classifier = SpanGroupClassifierRunner(sessions["classifier"],
                                                   self.pad_ids["classifier"])
        else:
            classifier = EncoderClassifierRunner(sessions["classifier"],
                                                 self.pad_ids["classifier"])
        return (
            SegmenterRunner(sessions["segmenter"], self.pad_ids["segmenter"]),
            classifier,
            DecoderRunner(sessions["extractor"], models["extractor"],
                          self.pad_ids["extractor"], device),
        )

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

    # ------------------------------------------------------------------ stages
    def _segment(self, questions: list[str]) -> list[list[Span]]:
        with _Timer(self.stats, "tokenize"):
            encoded = self.tokenizers["segmenter"].encode_batch(
                questions, self.spec.max_problem_tokens
            )
        with _Timer(self.stats, "segment"):
            probs = self.segmenter.label_probs([enc.ids for enc in encoded])
            self.stats.tokens["segmenter"] += sum(len(enc.ids) for enc in encoded)
            return [
                decode_spans(q, enc, p, self.segmenter_labels)[:MAX_SPANS]
                for q, enc, p in zip(questions, encoded, probs, strict=True)
            ]

    def _prefix_states(
        self, runner: DecoderRunner, model: str, questions: list[str]
    ) -> tuple[DecoderState, np.ndarray]:
        with _Timer(self.stats, "tokenize"):
            encoded = self.tokenizers[model].encode_batch(questions, self.spec.max_problem_tokens)
        ids = [enc.ids for enc in encoded]
        self.stats.tokens[model] += sum(len(x) for x in ids)
        logits, state = runner.prefill(ids)
        return state, logits

    def _suffix_ids(self, model: str, suffixes: list[str]) -> list[list[int]]:
        with _Timer(self.stats, "tokenize"):
            encoded = self.tokenizers[model].encode_batch(suffixes, self.spec.max_suffix_tokens)
        return [enc.ids for enc in encoded]

    def _rows_per_call(
        self, runner: DecoderRunner, prefix: DecoderState, new_tokens: int = 0
    ) -> int:
        """Rows per decoder call: at most MAX_ROWS_PER_CALL and KV_BUDGET_BYTES of cache
        (prefix + suffix + generated tokens, every layer, key and value)."""
        kv = getattr(runner, "kv", None)
        if kv is None:
            return MAX_ROWS_PER_CALL
        length = prefix.mask.shape[1] + self.spec.max_suffix_tokens + new_tokens
        itemsize = 2 if kv.dtype == "float16" else 4
        per_row = 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * length * itemsize
        return max(1, min(MAX_ROWS_PER_CALL, KV_BUDGET_BYTES // max(per_row, 1)))

    def _classify(
        self, prefixes: list[str], rows: list[tuple[int, list[tuple[int, str]]]]
    ) -> np.ndarray:
        """Operation log-probabilities (R, ops) for (problem index, group items) rows;
        ``prefixes``: each problem's text as the classifier reads it (``marked_problem``)."""
        prefix, _ = self._prefix_states(self.classifier, "classifier", prefixes)
        suffixes = self._suffix_ids(
            "classifier", [classifier_suffix(self.spec.templates, items) for _, items in rows]
        )
        out = []
        step = self._rows_per_call(self.classifier, prefix)
        for start in range(0, len(rows), step):
            chunk = range(start, min(start + step, len(rows)))
            state = prefix.take(np.array([rows[i][0] for i in chunk], dtype=np.int64))
            batch = [suffixes[i] for i in chunk]
            self.stats.tokens["classifier"] += sum(len(x) for x in batch)
            logits, _ = self.classifier.prefill(batch, state)
            out.append(log_softmax(logits))
        return np.concatenate(out) if out else np.zeros((0, len(self.operations)))

    def _classify_pairs(
        self, questions: list[str], spans: list[list[Span]],
        rows: list[tuple[int, list[tuple[int, str]]]],
    ) -> np.ndarray:
        """Operation log-probabilities (R, ops) from an encoder classifier: one text pair
        per row (``group_pair``), run in length-sorted chunks."""
        assert isinstance(self.classifier, EncoderClassifierRunner)
        with _Timer(self.stats, "tokenize"):
            bounds = [[(span.start, span.end) for span in s] for s in spans]
            pairs = [group_pair(self.spec.templates, questions[p], bounds[p], items)
                     for p, items in rows]
            encoded = self.tokenizers["classifier"].encode_pairs(
                pairs, self.spec.max_problem_tokens, self.spec.max_suffix_tokens)
        out = np.zeros((len(rows), len(self.operations)), dtype=np.float32)
        order = sorted(range(len(rows)), key=lambda i: len(encoded[i].ids))
        for start in range(0, len(order), ENCODER_ROWS_PER_CALL):
            chunk = order[start:start + ENCODER_ROWS_PER_CALL]
            batch = [encoded[i] for i in chunk]
            self.stats.tokens["classifier"] += sum(len(row.ids) for row in batch)
            out[chunk] = log_softmax(self.classifier.logits(batch))
        return out

    def _classify_groups(
        self, questions: list[str], spans: list[list[Span]],
        rows: list[tuple[int, list[tuple[int, str]]]],
    ) -> np.ndarray:
        """Operation log-probabilities (R, ops) from a span-group classifier: each problem
        read once (framed by its special tokens) with all its groups (at most GROUP_SLOTS
        per row), rows in length order, chunked to GROUP_CELLS_PER_CALL."""
        assert isinstance(self.classifier, SpanGroupClassifierRunner)
        with _Timer(self.stats, "tokenize"):
            encoded = self.tokenizers["classifier"].encode_framed(
                questions, self.spec.max_problem_tokens)
            per_span = [span_tokens(enc.offsets, [(s.start, s.end) for s in problem])
                        for enc, problem in zip(encoded, spans, strict=True)]
        by_problem: dict[int, list[int]] = defaultdict(list)
        for index, (p, _) in enumerate(rows):
            by_problem[p].append(index)
        feeds: list[tuple[GroupedProblem, list[int]]] = []  # a row and its groups' indices
        for p, indices in by_problem.items():
            for start in range(0, len(indices), GROUP_SLOTS):
                part = indices[start:start + GROUP_SLOTS]
                members = group_tokens(per_span[p], [[i for i, _ in rows[r][1]] for r in part])
                feeds.append((GroupedProblem(encoded[p].ids, members), part))
        feeds.sort(key=lambda feed: len(feed[0].ids))
        out = np.zeros((len(rows), len(self.operations)), dtype=np.float32)
        start = 0
        while start < len(feeds):
            end, slots = start + 1, len(feeds[start][1])
            while end < len(feeds):  # grow while the padded call stays in budget
                slots = max(slots, len(feeds[end][1]))
                if (end + 1 - start) * slots * len(feeds[end][0].ids) > GROUP_CELLS_PER_CALL:
                    break
                end += 1
            chunk = feeds[start:end]
            self.stats.tokens["classifier"] += sum(len(row.ids) for row, _ in chunk)
            logits = log_softmax(self.classifier.logits([row for row, _ in chunk]))
            for b, (_, part) in enumerate(chunk):
                out[part] = logits[b, :len(part)]
            start = end
        return out

    def _extract(
        self, prefix: DecoderState, rows: list[tuple[int, list[tuple[int, str]], str]],
        branches: int,
    ) -> list[list[tuple[str, float]]]:
        """Argument texts and their log-probabilities per (problem, group, op) row:
        ``branches`` of them (the top first tokens, each continued greedily, or with
        ``search.arg_beam`` the beam search's best sequences); ``prefix``: the extractor's
        cache after each problem's text (row ``p`` for problem ``p``)."""
        suffixes = self._suffix_ids(
            "extractor",
            [extractor_suffix(self.spec.templates, items, op) for _, items, op in rows],
        )
        decode = self.tokenizers["extractor"].decode
        self.stats.extractor_rows += len(rows) * branches
        out: list[list[tuple[str, float]]] = []
        step = self._rows_per_call(self.extractor, prefix, self.spec.max_new_tokens)
        step = max(1, step // branches)
        for start in range(0, len(rows), step):
            chunk = range(start, min(start + step, len(rows)))
            state = prefix.take(np.array([rows[i][0] for i in chunk], dtype=np.int64))
            batch = [suffixes[i] for i in chunk]
            logits, state = self.extractor.prefill(batch, state)
            found: list[list[tuple[list[int], float]]]  # per row: (token ids, logprob)
            if branches > 1 and self.spec.search.arg_beam:
                found = self.extractor.beam(logits, state, eos_id=self.eos_id,
                                            max_new_tokens=self.spec.max_new_tokens,
                                            width=branches, depth=BEAM_DEPTH)
            else:
                first_logprob = 0.0
                if branches > 1:
                    logits, state, first_logprob = branch_first_token(logits, state, branches)
                generated, logprob = self.extractor.greedy(
                    logits, state, eos_id=self.eos_id, max_new_tokens=self.spec.max_new_tokens
                )
                pairs = list(zip(generated, (logprob + first_logprob).tolist(), strict=True))
                found = [pairs[i:i + branches] for i in range(0, len(pairs), branches)]
            self.stats.tokens["extractor"] += sum(len(x) for x in batch) + sum(
                len(ids) for row in found for ids, _ in row)
            with _Timer(self.stats, "tokenize"):
                out.extend([(decode(ids), float(lp)) for ids, lp in row] for row in found)
        return out

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
        spans = [list(s) for s in spans] if spans is not None else self._segment(questions)

        with _Timer(self.stats, "search"):
            sets = [
                search.used_sets([span.used_prob for span in s], self.spec.search) for s in spans
            ]
            groups = [search.unique_groups(u, self.spec.search) for u in sets]
            class_rows = [
                (p, [(i, spans[p][i].text) for i in group])
                for p in range(len(questions))
                for group in groups[p]
            ]
            prefixes = [
                marked_problem(self.spec.templates, q, [(span.start, span.end) for span in s])
                for q, s in zip(questions, spans, strict=True)
            ]
        with _Timer(self.stats, "classify"):
            if isinstance(self.classifier, SpanGroupClassifierRunner):
                op_scores = self._classify_groups(questions, spans, class_rows)
            elif isinstance(self.classifier, EncoderClassifierRunner):
                op_scores = self._classify_pairs(questions, spans, class_rows)
            else:
                op_scores = self._classify(prefixes, class_rows)
        with _Timer(self.stats, "search"):
            real = [i for i, op in enumerate(self.operations) if op != REJECT]
            choosable = np.full_like(op_scores, -np.inf)
            choosable[:, real] = op_scores[:, real]  # a rejected group keeps its low scores
            ranked_ops = np.argsort(-choosable, axis=1)
            min_op_logprob = math.log(max(self.spec.search.min_op_prob, 1e-12))
            reject = self.operations.index(REJECT) if REJECT in self.operations else None
            no_learned_step: list[float | None] = [None] * len(questions)
            # (row, its key) grouped by first-token branches (the tail group may read wider)
            # key: (problem, group, operation, its log-probability, log P(a step))
            extract_rows: dict[int, list[tuple[tuple[int, list[tuple[int, str]], str],
                                               tuple[int, tuple[int, ...], str, float,
                                                     float]]]] = {}
            flat = 0
            for p in range(len(questions)):
                for group in groups[p]:
                    is_step = 0.0
                    if reject is not None:
                        if not group:  # P(the program has no such step)
                            no_learned_step[p] = float(op_scores[flat, reject])
                        is_step = log_one_minus_exp(float(op_scores[flat, reject]))
                    ops, branches, _ = group_breadth(self.spec.search, group)
                    k = max(1, min(ops, len(real)))
                    for rank, op_index in enumerate(ranked_ops[flat, :k]):
                        if rank and op_scores[flat, op_index] < min_op_logprob:
                            continue  # pruned by the classifier before the extractor runs
                        op = self.operations[op_index]
                        extract_rows.setdefault(branches, []).append((
                            (p, class_rows[flat][1], op),
                            (p, group, op, float(op_scores[flat, op_index]), is_step)))
                    flat += 1
        variants: list[dict[tuple[int, ...], list[Variant]]] = [
            defaultdict(list) for _ in questions
        ]
        if extract_rows:
            with _Timer(self.stats, "extract"):
                prefix, _ = self._prefix_states(self.extractor, "extractor", prefixes)
        for branches, keyed in extract_rows.items():
            with _Timer(self.stats, "extract"):
                extractions = self._extract(prefix, [row for row, _ in keyed], branches)
            for (_, (p, group, op, op_lp, is_step)), readings in zip(keyed, extractions,
                                                                     strict=True):
                for text, args_lp in readings:
                    variants[p][group].append(Variant(
                        op, parse_args(text), op_lp + args_lp, text, is_step, op_lp - is_step))
        with _Timer(self.stats, "execute"):
            results = [
                self._choose(ids[p], spans[p], sets[p], variants[p], trace, no_learned_step[p])
                for p in range(len(questions))
            ]
        return results

    def _choose(
        self,
        id: Any,
        spans: list[Span],
        sets: list[search.UsedSet],
        variants: dict[tuple[int, ...], list[Variant]],
        trace: bool = False,
        no_learned_step: float | None = None,
    ) -> SolveResult:
        """Enumerate candidates, execute the best-scored ones, pick the answer;
        ``no_learned_step``: the classifier's log-probability that the span-free group is
        no step (None without a reject label)."""
        spec = self.spec.search
        options: dict[tuple[int, ...], list[Variant]] = {}
        for group, found in variants.items():
            parsed = distinct_readings(found)
            if parsed:
                options[group] = parsed[: group_breadth(spec, group)[2]]
        quantities = [span.value for span in spans]
        used_probs = [span.used_prob for span in spans]
        valid: list[Scored] = []
        features: list[dict[str, float]] = []  # only for a learned scorer or a trace
        featured = trace or self.spec.answer_scorer is not None
        budget = spec.max_candidates
        executions = 0
        for ranked in best_first(search.candidates(sets, spec), options):
            if len(valid) >= budget or executions >= budget * MAX_EXECUTIONS_FACTOR:
                break
            tail = ranked.candidate.tail
            template = tail if tail not in (None, "LEARNED") else None
            # chunk steps, and a learned step, run in any order (search.chunk_orders)
            for order in search.chunk_orders(len(ranked.readings), spec):
                steps = [ranked.readings[i] for i in order]
                refs = [[a.index for a in v.args if a.kind == "result"] for v in steps]
                if not search.references_ok(refs, template, spec.connected):
                    continue
                program = [Step(v.op, v.args) for v in steps]
                if template is not None:
                    program.append(Step(template, ()))
                executions += 1
                result = execute(tuple(program), quantities, constants=self.constants,
                                 connected=spec.connected)
                if result.ok:
                    order_score = ranked.score + spec.inversion_logprob * search.inversions(order)
                    valid.append(Scored(order_score, result, ranked.index))
                    if not featured:
                        continue
                    info = CandidateInfo(
                        order_score,
                        tuple(v.logprob for v in steps),
                        ranked.candidate.used_logprob,
                        template is not None,
                        tail_agreement(no_learned_step, tail == "LEARNED"),
                        tuple(v.parts for v in steps),
                    )
                    features.append(candidate_features(info, result, quantities, used_probs))
        vectors = with_pool_features(features, [item.result for item in valid])
        scorer = self.spec.answer_scorer
        if scorer is not None:
            logits = scorer.logits(vectors)
            learned = [replace(item, score=logit)
                       for item, logit in zip(valid, logits, strict=True)]
            best, confidence = pick_answer(learned)
            calibration = self.spec.confidence_calibration
            if best is not None and calibration is not None:
                confidence = calibration.probability(calibration_inputs(
                    logits, [item.result.value for item in valid], confidence))
        else:
            best, confidence = pick_answer(valid, self.spec.answer_prior, spec.pool_temperature)
        debug = (
            {
                "variants": dict(variants),
                "valid_values": [item.result.value for item in valid],
                "candidate_features": vectors,
                "candidate_programs": [program_record(item.result, spans) for item in valid],
                "used_sets": [used.spans for used in sets],
            }
            if trace
            else None
        )
        if best is None:
            return SolveResult(
                id=id, error="no valid candidate program", spans=spans, trace=debug
            )
        assert best.result.value is not None
        return SolveResult.from_value(
            id,
            best.result.value,
            program=program_record(best.result, spans),
            confidence=confidence,
            spans=spans,
            trace=debug,
        )

def distinct_readings(found: Iterable[Variant]) -> list[Variant]:
    """The parsed readings, best first, one per program step: a reading that only reorders
    a commutative operation's arguments (``MUL Q1 Q0`` after ``MUL Q0 Q1``) is dropped, so
    it does not take the place of a reading with another value."""
    seen: set[tuple[str, tuple[Arg, ...]]] = set()
    out = []
    for variant in sorted((v for v in found if v.args is not None), key=lambda v: -v.logprob):
        key = (variant.op, canonical_args(variant.op, variant.args or ()))
        if key not in seen:
            seen.add(key)
            out.append(variant)
    return out


def branch_first_token(
    logits: np.ndarray, state: DecoderState, branches: int
) -> tuple[np.ndarray, DecoderState, np.ndarray]:
    """Each row's top ``branches`` next tokens as rows of their own (row r becomes rows
    r*branches ... r*branches + branches - 1, best first): logits that force each
    row's token, the repeated state, and the forced tokens' log-probabilities."""
    logprobs = log_softmax(logits)
    top = top_k(logprobs, branches)
    rows = np.repeat(np.arange(len(logits)), top.shape[1])
    tokens = top.reshape(-1)
    forced = np.full((len(rows), logits.shape[1]), -1e4, dtype=np.float32)
    forced[np.arange(len(rows)), tokens] = 0.0
    return forced, state.take(rows), logprobs[rows, tokens].astype(np.float64)


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


__all__ = ["Solver", "SolveResult", "Span", "describe", "program_record", "ArtifactsError"]
