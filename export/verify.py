"""Parity of the exported graphs (onnxruntime) with the Hugging Face models (PyTorch).

The reference outputs are computed first, from the PyTorch model as the checkpoint
defines it (right padding, full recomputation, no cache), so that the model can be
freed before the ONNX session is opened. The graphs are then run the way the runtime
runs them: the segmenter (and an encoder classifier, on text pairs or on problems with
their span groups) on a right-padded batch; the decoders on a left-padded batch,
prefilled in one go (P = 0) and in two chunks (problem, then suffix, P > 0), then fed
the reference's greedy tokens one step at a time with the KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.templates import classifier_suffix, extractor_suffix, group_pair
from mycelium.runtime.tokenization import GroupedProblem, group_feed

from .io_specs import GraphIO

GREEDY_STEPS = 4  # extractor tokens compared after the prompt
PROBLEMS = (
    "Tom has 3 apples and buys 5 more.",
    "A box holds 12 pens. Ann buys 4 boxes and gives away 7 pens. How many pens are left?",
    "Sam ran 2 miles.",
)
GROUPS = (((0, "3"), (1, "5")), ((0, "12"), (1, "4"), (2, "7")), ((0, "2"),))
OPS = ("ADD", "MUL", "DIV")


@dataclass(frozen=True)
class Tolerance:
    """Allowed max |Δlogits| = atol + rtol * max |reference logit|; top-1 agreement rule."""

    atol: float
    rtol: float
    argmax: bool  # top-1 labels / greedy tokens must agree

    def limit(self, scale: float) -> float:
        """The bound for a reference whose largest |logit| is ``scale``."""
        return self.atol + self.rtol * scale

    def describe(self) -> str:
        """Human-readable rule, for the table and the manifest."""
        rule = f"{self.atol:g}" + (f" + {self.rtol:g}*max|ref|" if self.rtol else "")
        return rule + ("" if self.argmax else " (argmax reported)")


TOLERANCES = {
    "fp32": Tolerance(atol=1e-3, rtol=0.0, argmax=True),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, argmax=True),
    # int8 quantizes activations on the fly: only gross errors fail; top-1 is reported.
    "int8": Tolerance(atol=0.1, rtol=0.15, argmax=False),
}


@dataclass
class ParityRow:
    """Parity of one exported model."""

    model: str
    precision: str
    status: str  # "ok" | "FAIL" | "unverified" | "skipped"
    max_abs_diff: float | None = None
    tolerance: float | None = None
    rule: str = ""
    argmax_match: bool | None = None  # top-1 labels (greedy tokens for the extractor) agree
    provider: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        skip = ("model", "precision")
        return {k: v for k, v in self.__dict__.items() if k not in skip and v not in (None, "")}


@dataclass
class Sample:
    """Token ids of the parity samples, as the runtime builds them."""

    inputs: list[list[int]]  # segmenter rows, encoder pairs, or decoder prompts
    splits: list[int] = field(default_factory=list)  # decoders: problem length per row
    type_ids: list[list[int]] | None = None  # encoder pairs: segment id per token
    groups: list[list[list[int]]] | None = None  # span groups: token positions per group


@dataclass
class Reference(Sample):
    """PyTorch outputs on the sample inputs."""

    logits: list[np.ndarray] = field(default_factory=list)  # per step (B, N), or [(B, T, L)]
    tokens: list[np.ndarray] = field(default_factory=list)  # argmax per step (B,)


def sample_inputs(role: str, tokenizer_path: Path, spec: SolverSpec,
                  cached: bool = True, span_groups: bool = False) -> Sample:
    """The samples of a role: problems (segmenter); framed problems and their span groups,
    one of them span-free (a ``span_groups`` classifier); (problem with the group marked,
    group) pairs (encoder classifier); problem + suffix prompts split after the problem
    (decoders, ``cached``)."""
    from tokenizers import Tokenizer

    from mycelium.runtime.tokenization import (
        encode_framed,
        encode_pairs,
        group_tokens,
        span_tokens,
    )

    tokenizer = Tokenizer.from_file(str(tokenizer_path))

    def encode(text: str, limit: int) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids[:limit]

    problems = [encode(text, spec.max_problem_tokens) for text in PROBLEMS]
    if role == "segmenter":
        return Sample(problems, [len(p) for p in problems])
    if role == "classifier" and span_groups:
        framed = encode_framed(tokenizer, list(PROBLEMS), spec.max_problem_tokens)
        groups = []
        for text, group, enc in zip(PROBLEMS, GROUPS, framed, strict=True):
            per_span = span_tokens(enc.offsets, _spans(text, group))
            groups.append(group_tokens(per_span, [[0], list(range(len(group)))]))
        groups[0].append([])  # a span-free group next to real ones
        return Sample([e.ids for e in framed], groups=groups)
    if role == "classifier" and not cached:
        pairs = [group_pair(spec.templates, text, _spans(text, group), group)
                 for text, group in zip(PROBLEMS, GROUPS, strict=True)]
        encoded = encode_pairs(tokenizer, pairs, spec.max_problem_tokens, spec.max_suffix_tokens)
        return Sample([e.ids for e in encoded], type_ids=[e.type_ids for e in encoded])
    suffixes = [
        classifier_suffix(spec.templates, group) if role == "classifier"
        else extractor_suffix(spec.templates, group, op)
        for group, op in zip(GROUPS, OPS, strict=True)
    ]
    rows = [p + encode(s, spec.max_suffix_tokens) for p, s in zip(problems, suffixes, strict=True)]
    return Sample(rows, [len(p) for p in problems])


def _spans(text: str, group: tuple[tuple[int, str], ...]) -> list[tuple[int, int]]:
    """Character spans of a sample group's quantities (their first occurrences, in order)."""
    spans, start = [], 0
    for _, quantity in group:
        begin = text.index(quantity, start)
        spans.append((begin, begin + len(quantity)))
        start = begin + len(quantity)
    return spans


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = row
        mask[i, span] = 1
    return ids, mask


def reference(role: str, model: Any, sample: Sample, pad_id: int, steps: int) -> Reference:
    """Run the Hugging Face model (right padding, no cache) on the samples."""
    import torch

    ref = Reference([list(r) for r in sample.inputs], list(sample.splits), sample.type_ids,
                    sample.groups)
    rows = [list(r) for r in sample.inputs]
    with torch.no_grad():
        for _ in range(steps):
            ids, mask = _pad(rows, pad_id, left=False)
            inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
            if sample.type_ids is not None:
                inputs["token_type_ids"] = torch.from_numpy(_pad(sample.type_ids, 0, False)[0])
            if sample.groups is not None:
                feed = _group_feed(rows, sample.groups, pad_id)
                inputs["group_tokens"] = torch.from_numpy(feed["group_tokens"])
            if role == "extractor":  # the lm_head only at each row's last real position
                last = mask.sum(axis=1) - 1
                keep = sorted(set(last.tolist()))
                out = model(**inputs, logits_to_keep=torch.tensor(keep))
                logits = out.logits.float().numpy()  # (B, len(keep), V)
                logits = logits[np.arange(len(rows)), [keep.index(i) for i in last]]
            else:
                logits = model(**inputs).logits.float().numpy()
            ref.logits.append(logits)
            ref.tokens.append(logits.argmax(axis=-1))
            if role != "extractor":
                break
            rows = [r + [int(t)] for r, t in zip(rows, ref.tokens[-1], strict=True)]
    return ref


class _Decoder:
    """Feeds a decoder graph the way the runtime does (left padding, running positions)."""

    def __init__(self, session: Any, io: GraphIO, dtype: Any):
        self.session = session
        self.io = io
        self.past_specs = io.inputs[3:]
        self.dtype = dtype

    def empty(self, batch: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        past = [np.zeros((batch, s.shape[1], 0, s.shape[3]), self.dtype) for s in self.past_specs]
        return np.zeros((batch, 0), np.int64), np.zeros(batch, np.int64), past

    def feed(self, ids: np.ndarray, new_mask: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        mask, next_position, past = state
        mask = np.concatenate([mask, new_mask], axis=1)
        positions = np.maximum(next_position[:, None] + np.cumsum(new_mask, axis=1) - 1, 0)
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        feed.update({spec.name: value for spec, value in zip(self.past_specs, past, strict=True)})
        out = self.session.run(self.io.output_names, feed)
        expected = (ids.shape[0], self.past_specs[0].shape[1], mask.shape[1],
                    self.past_specs[0].shape[3])
        if any(tuple(p.shape) != expected for p in out[1:]):
            raise ValueError(f"present shape {out[1].shape} is not {expected}")
        return out[0], (mask, next_position + new_mask.sum(axis=1), list(out[1:]))


def _run_segmenter(session: Any, ref: Reference, pad_id: int) -> tuple[list, list, np.ndarray]:
    ids, mask = _pad(ref.inputs, pad_id, left=False)
    (logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
    real = mask.astype(bool)
    return [logits[real]], [ref.logits[0][real]], real


def _run_encoder_classifier(session: Any, ref: Reference, pad_id: int) -> tuple[list, list]:
    assert ref.type_ids is not None
    ids, mask = _pad(ref.inputs, pad_id, left=False)
    types, _ = _pad(ref.type_ids, 0, left=False)
    (logits,) = session.run(
        ["logits"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    return [logits], [ref.logits[0]]


def _group_feed(rows: list[list[int]], groups: list[list[list[int]]],
                pad_id: int) -> dict[str, np.ndarray]:
    return group_feed([GroupedProblem(r, g) for r, g in zip(rows, groups, strict=True)], pad_id)


def _run_span_group_classifier(session: Any, ref: Reference,
                               pad_id: int) -> tuple[list, list]:
    assert ref.groups is not None
    (logits,) = session.run(["logits"], _group_feed(ref.inputs, ref.groups, pad_id))
    return [logits], [ref.logits[0]]


def _run_decoder(session: Any, io: GraphIO, dtype: Any, ref: Reference,
                 pad_id: int) -> tuple[list, list]:
    decoder = _Decoder(session, io, dtype)
    batch = len(ref.inputs)
    got, want = [], []
    ids, mask = _pad(ref.inputs, pad_id, left=True)  # one prefill, P = 0
    logits, _ = decoder.feed(ids, mask, decoder.empty(batch))
    got.append(logits)
    want.append(ref.logits[0])
    # Two chunks: problems (P = 0), then suffixes (P > 0), as the runtime does.
    problems = [row[:n] for row, n in zip(ref.inputs, ref.splits, strict=True)]
    suffixes = [row[n:] for row, n in zip(ref.inputs, ref.splits, strict=True)]
    ids, mask = _pad(problems, pad_id, left=True)
    _, state = decoder.feed(ids, mask, decoder.empty(batch))
    ids, mask = _pad(suffixes, pad_id, left=True)
    logits, state = decoder.feed(ids, mask, state)
    got.append(logits)
    want.append(ref.logits[0])
    for step in range(1, len(ref.logits)):  # decode with the cache, teacher-forced
        token = ref.tokens[step - 1].reshape(-1, 1).astype(np.int64)
        logits, state = decoder.feed(token, np.ones_like(token), state)
        got.append(logits)
        want.append(ref.logits[step])
    return got, want


def compare(role: str, precision: str, session: Any, provider: str, io: GraphIO,
            ref: Reference, pad_id: int) -> ParityRow:
    """Run the session on the samples and compare with the reference."""
    tolerance = TOLERANCES[precision]
    dtype = np.float16 if io.outputs[0].dtype == "float16" else np.float32
    row = ParityRow(role, precision, "FAIL", rule=tolerance.describe(), provider=provider)
    try:
        if role == "segmenter":
            got, want, _ = _run_segmenter(session, ref, pad_id)
        elif ref.type_ids is not None:
            got, want = _run_encoder_classifier(session, ref, pad_id)
        elif ref.groups is not None:
            got, want = _run_span_group_classifier(session, ref, pad_id)
        else:
            got, want = _run_decoder(session, io, dtype, ref, pad_id)
    except (ValueError, RuntimeError) as exc:
        row.note = f"run failed: {str(exc).splitlines()[0]}"
        return row
    for g, w in zip(got, want, strict=True):  # same number of checks by construction
        if g.shape != w.shape:
            row.note = f"logits shape {g.shape} is not {w.shape}"
            return row
    pairs = list(zip(got, want, strict=True))
    diffs = [np.abs(g.astype(np.float64) - w.astype(np.float64)).max() for g, w in pairs]
    scale = max(float(np.abs(w).max()) for w in want)
    row.max_abs_diff = float(max(diffs))
    row.tolerance = tolerance.limit(scale)
    row.argmax_match = all(
        np.array_equal(g.argmax(axis=-1), w.argmax(axis=-1)) for g, w in pairs
    )
    finite = all(np.isfinite(g).all() for g in got)
    ok = finite and row.max_abs_diff <= row.tolerance
    ok = ok and (row.argmax_match or not tolerance.argmax)
    row.status = "ok" if ok else "FAIL"
    if not finite:
        row.note = "non-finite logits"
    elif not row.argmax_match:
        row.note = "greedy tokens differ" if role == "extractor" else "top-1 labels differ"
    return row


def failure(row: ParityRow) -> str:
    """One clause naming a failed model and its figure."""
    if row.max_abs_diff is None:
        return f"{row.model} ({row.precision}): {row.note}"
    text = (f"{row.model} ({row.precision}): max |Δlogits| {row.max_abs_diff:.3g} "
            f"(tolerance {row.tolerance:.3g})")
    return text + (f", {row.note}" if row.note else "")


def format_table(rows: list[ParityRow]) -> str:
    """The parity table printed after an export."""
    header = ("model", "precision", "max|Δlogits|", "tolerance", "greedy", "status", "provider")
    lines = [header]
    for row in rows:
        lines.append((
            row.model,
            row.precision,
            "-" if row.max_abs_diff is None else f"{row.max_abs_diff:.2e}",
            "-" if row.tolerance is None else f"{row.tolerance:.2e}",
            "-" if row.argmax_match is None else ("yes" if row.argmax_match else "no"),
            row.status + (f" ({row.note})" if row.note else ""),
            (row.provider or "-").removesuffix("ExecutionProvider"),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def open_session(path: Path, precision: str) -> tuple[Any, str] | None:
    """An onnxruntime session the way the runtime makes one, and its provider.

    fp16 graphs run on CUDA when this onnxruntime has it, else on the CPU; None
    when no session can be made for an fp16 graph (its parity stays unverified).
    Other precisions raise :class:`~mycelium.runtime.errors.ArtifactsError`.
    """
    import onnxruntime as ort

    from mycelium.runtime.errors import ArtifactsError
    from mycelium.runtime.sessions import PROVIDERS, make_session

    cuda = PROVIDERS["cuda"] in ort.get_available_providers()
    name = "cuda" if precision == "fp16" and cuda else "cpu"
    try:
        session = make_session(path, name)
    except ArtifactsError:
        if precision == "fp16":
            return None
        raise
    return session, session.get_providers()[0]
