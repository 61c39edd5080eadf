"""Train the three specialists from a supervision folder and write a checkpoint.

Inputs are built exactly as the runtime builds them: the problem text is
tokenized alone (truncated to ``max_problem_tokens``) and the template suffix
alone (truncated to ``max_suffix_tokens``), then concatenated.

The classifier and the extractor see every span group of a problem after the
same problem text, so a problem's groups are *packed* into one row: the
problem's tokens once, then one block per group. A 4D attention mask lets each
block attend to the problem and to itself only, and each block's position ids
continue from the problem's length, so every block computes exactly what the
unpacked sequence ``problem + suffix (+ target)`` computes, for a fraction of
the cost. The classifier reads the last token of each block; the extractor's
loss covers each block's target tokens and ``<eos>``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from mycelium.runtime.spec import (
    MARKED_TEMPLATES,
    REJECT,
    SearchSpec,
    SolverSpec,
    fit_answer_prior,
)
from mycelium.runtime.templates import classifier_suffix, extractor_suffix, marked_problem

from .models import (
    MAX_EXPORT_BYTES,
    SIZES,
    TokenIds,
    add_dropout,
    build_classifier,
    build_extractor,
    build_segmenter,
    encoder_classifier,
    encoder_segmenter,
    export_bytes,
    load_backbone,
    parameter_count,
    size_summary,
)

IGNORE = -100
BACKBONE_FILE = "backbone.safetensors"  # the pretrained backbone a checkpoint started from
Group = list[tuple[int, str]]
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- config


@dataclass
class FitConfig:
    """Hyper-parameters of one ``fit`` run (recorded in training.json)."""

    size: str = "small"
    epochs: int = 20  # upper bound per model
    minutes: float = 12.0  # wall-clock budget per model (0 = none)
    patience: int = 3  # stop after this many epochs without a better dev figure (0 = never)
    seed: int = 0
    device: str = "auto"
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    warmup_steps: int = 100
    clip: float = 1.0
    batch_size: int = 32  # segmenter rows per step
    packed_batch_size: int = 16  # problems per step for the classifier and the extractor
    bucket_chunk: int = 50  # batches per length-sorting chunk
    generate_eval: int = 300  # extractor dev rows checked by greedy generation at the end
    pretrain_minutes: float = 0.0  # 0 = no backbone pretraining
    pretrain_text: str | None = None  # GSM8K JSONL whose answers join the pretraining text
    backbone: str | None = None  # a saved backbone.safetensors to start from (no pretraining)
    augment: int = 0  # number-resampled copies of each train problem (train/augment.py)
    dropout: float = 0.0  # residual dropout while fine-tuning the specialists (models.add_dropout)
    span_markers: bool = False  # classifier/extractor read MARKED_TEMPLATES (spec.py)
    models: tuple[str, ...] = ("segmenter", "classifier", "extractor")
    # a pretrained encoder folder (config.json, model.safetensors, tokenizer.json) the
    # segmenter starts from, with its own tokenizer; None = a Qwen2 segmenter from scratch
    segmenter_init: str | None = None
    # the same for the classifier: it then reads one text pair per group (pair_classifier.py),
    # ``packed_batch_size`` pairs per step
    classifier_init: str | None = None
    classifier_layers: int = 0  # keep only the encoder classifier's first N layers (0 = all)
    # how an encoder classifier reads a group: "pair" (one pass per group, pair_classifier.py)
    # or "span-groups" (one pass per problem, span_group.py)
    classifier_head: str = "pair"
    # the same for the extractor: the encoder's layers read causally with a KV cache and
    # its WordPiece tokenizer with the argument grammar's tokens (arg_decoder.py)
    extractor_init: str | None = None
    init_lr: float = 5e-5  # peak learning rate of a specialist started from a pretrained encoder
    reject_weight: float = 1.0  # loss weight of the classifier's reject-labelled groups

    def encoder_init(self, name: str) -> Path | None:
        """The pretrained encoder folder a specialist starts from, if any."""
        folder = {"segmenter": self.segmenter_init, "classifier": self.classifier_init,
                  "extractor": self.extractor_init}.get(name)
        return Path(folder) if folder else None


# --------------------------------------------------------------------------- data


@dataclass
class Vocab:
    """The tokenizer and the special ids the trainer needs."""

    tokenizer: Tokenizer
    pad: int
    eos: int
    # an encoder extractor's vocabulary is cut: per token id, the encoder's own id
    source_ids: list[int] | None = None
    json: str | None = None  # the tokenizer.json a checkpoint stores (when built here)
    output_tokens: int = 0  # an encoder extractor writes only the first ids (its grammar)

    @classmethod
    def load(cls, path: Path, spec: SolverSpec) -> Vocab:
        """Read tokenizer.json and check it has every special token of the spec."""
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        ids = {}
        for key, token in spec.special_tokens.items():
            value = tokenizer.token_to_id(token)
            if value is None:
                raise ValueError(f"{path}: tokenizer has no special token {token!r}")
            ids[key] = value
        return cls(tokenizer, ids["pad"], ids["eos"])

    @classmethod
    def for_encoder(cls, folder: Path) -> Vocab:
        """A pretrained encoder's own tokenizer; its config.json names the pad id."""
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        pad = config.get("pad_token_id")
        if not isinstance(pad, int):
            raise ValueError(f"{folder}/config.json: no pad_token_id")
        return cls(tokenizer, pad, -1)  # a token classifier never ends a sequence

    @classmethod
    def for_argument_decoder(cls, folder: Path, spec: SolverSpec, texts: list[str]) -> Vocab:
        """A pretrained encoder's tokenizer with the argument grammar's tokens first, its
        vocabulary cut to what ``texts`` use (``arg_decoder.argument_tokenizer``)."""
        from .arg_decoder import argument_tokenizer, grammar_tokens
        from .tokenizer import ARG_TOKENS, WORD_TOKENS

        special = [token for key, token in spec.special_tokens.items() if key != "pad"]
        text, source, outputs = argument_tokenizer(
            (folder / "tokenizer.json").read_text("utf-8"), grammar_tokens(special, ARG_TOKENS),
            texts, grammar_tokens(WORD_TOKENS))
        tokenizer = Tokenizer.from_str(text)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        eos = tokenizer.token_to_id(spec.special_tokens["eos"])
        return cls(tokenizer, 0, eos, source, text, outputs)

    @property
    def token_ids(self) -> TokenIds:
        """Ids for the model configs."""
        return TokenIds(self.pad, self.eos, self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: list[str], limit: int | None = None) -> list[Any]:
        """Encodings without special tokens added (ids, offsets), truncated to ``limit``."""
        out = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        if limit is None:
            return out
        return [_Truncated(e.ids[:limit], e.offsets[:limit]) for e in out]


@dataclass
class _Truncated:
    ids: list[int]
    offsets: list[tuple[int, int]]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSONL file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def bio_labels_from_offsets(
    offsets: Sequence[tuple[int, int]], spans: Sequence[Sequence[int]]
) -> list[int]:
    """0=O, 1=B-QTY, 2=I-QTY per token: a token overlapping a span is inside it."""
    labels = [0] * len(offsets)
    for start, end in spans:
        first = True
        for i, (a, b) in enumerate(offsets):
            if b > start and a < end and b > a:
                labels[i] = 1 if first else 2
                first = False
    return labels


def _bio_labels(tokenizer: Tokenizer, question: str, spans: list[Any],
                used: list[bool] | None = None) -> list[int]:
    """The data engineer's ``bio_labels`` when present, else the offsets-based equivalent
    (which reads every span as used)."""
    try:
        from .tokenizer import bio_labels
    except ImportError:
        offsets = tokenizer.encode(question, add_special_tokens=False).offsets
        return bio_labels_from_offsets(offsets, spans)
    return bio_labels(tokenizer, question, spans, used)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def spans_from_bio(
    text: str, offsets: Sequence[tuple[int, int]], labels: Sequence[int]
) -> list[tuple[int, int]]:
    """Character spans from BIO label ids, decoded as the runtime does (whitespace trimmed)."""
    spans: list[tuple[int, int]] = []
    inside = False
    for (start, end), label in zip(offsets, labels, strict=True):
        if label == 1 or (label == 2 and not inside):
            spans.append((start, end))
            inside = True
        elif label == 2 and inside:
            spans[-1] = (spans[-1][0], end)
        else:
            inside = False
    out = [_trim(text, s, e) for s, e in spans]
    return [(s, e) for s, e in out if e > s]


@dataclass
class SegItem:
    """One problem for the segmenter."""

    ids: list[int]
    labels: list[int]
    offsets: list[tuple[int, int]]
    question: str
    gold: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PackedItem:
    """One problem and all its groups, packed into a single row."""

    question: list[int]
    blocks: list[list[int]]  # suffix (+ target + eos for the extractor) per group
    # classifier: label per block; extractor: index in its block where the target starts
    labels: list[int]
    targets: list[str] = field(default_factory=list)  # extractor target text per block
    suffix_lens: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.question) + sum(len(b) for b in self.blocks)


def _by_question(records: list[dict[str, Any]], split: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("split") == split:
            grouped.setdefault(record["question"], []).append(record)
    return grouped


def _prefixes(grouped: dict[str, list[dict[str, Any]]], spec: SolverSpec) -> list[str]:
    """Each problem's text as the classifier and extractor read it (``marked_problem``)."""
    out = []
    for question, rows in grouped.items():
        spans = rows[0].get("spans")
        if spans is None and spec.templates.span_marker:
            raise ValueError(f"step record {rows[0].get('id')} has no 'spans': the span "
                             "markers need them (rewrite the data with `mycelium-train data`)")
        out.append(marked_problem(spec.templates, question,
                                  [(int(a), int(b)) for a, b in spans or []]))
    return out


def _check_no_pad(ids: list[int], pad: int, where: str) -> None:
    if pad in ids:
        raise ValueError(f"{where}: the pad token occurs inside a real input")


def segmenter_items(records: list[dict[str, Any]], split: str, vocab: Vocab,
                    spec: SolverSpec) -> list[SegItem]:
    """Encode segmenter records of one split."""
    rows = [r for r in records if r.get("split") == split]
    encoded = vocab.encode([r["question"] for r in rows], spec.max_problem_tokens)
    items = []
    for record, enc in zip(rows, encoded, strict=True):
        _check_no_pad(enc.ids, vocab.pad, f"segmenter {record.get('id')}")
        question = record["question"]
        spans = [tuple(s) for s in record["spans"]]
        used = record.get("used")  # v2 data: one flag per span (all quantities)
        gold = [_trim(question, s, e) for k, (s, e) in enumerate(spans) if used is None or used[k]]
        labels = _bio_labels(vocab.tokenizer, question, spans, used)[: len(enc.ids)]
        items.append(SegItem(list(enc.ids), labels, list(enc.offsets), question,
                             [g for g in gold if g[1] > g[0]]))
    return items


def reject_class_weights(spec: SolverSpec, weight: float) -> torch.Tensor:
    """Loss weights of the classifier's labels: 1 for each operation, ``weight`` for the
    reject label (below 1: rejecting a group takes less probability from the operations)."""
    return torch.tensor([weight if label == REJECT else 1.0
                         for label in classifier_labels(spec, reject=True)])


def classifier_labels(spec: SolverSpec, reject: bool) -> tuple[str, ...]:
    """The classifier's labels: the operations, then ``REJECT`` when it learns one."""
    return (*spec.operations, REJECT) if reject else spec.operations


def classifier_items(records: list[dict[str, Any]], split: str, vocab: Vocab,
                     spec: SolverSpec) -> list[PackedItem]:
    """Encode classifier records of one split, one packed item per problem."""
    op_index = {op: i for i, op in enumerate(classifier_labels(spec, reject=True))}
    grouped = _by_question(records, split)
    questions = list(grouped)
    q_ids = vocab.encode(_prefixes(grouped, spec), spec.max_problem_tokens)
    items = []
    for question, enc in zip(questions, q_ids, strict=True):
        rows = grouped[question]
        suffixes = vocab.encode(
            [classifier_suffix(spec.templates, [tuple(g) for g in r["group"]]) for r in rows],
            spec.max_suffix_tokens,
        )
        blocks = [list(s.ids) for s in suffixes]
        for block in blocks + [enc.ids]:
            _check_no_pad(block, vocab.pad, f"classifier {rows[0].get('id')}")
        items.append(PackedItem(list(enc.ids), blocks, [op_index[r["op"]] for r in rows]))
    return items


def extractor_items(records: list[dict[str, Any]], split: str, vocab: Vocab,
                    spec: SolverSpec) -> list[PackedItem]:
    """Encode extractor records of one split, one packed item per problem."""
    grouped = _by_question(records, split)
    questions = list(grouped)
    q_ids = vocab.encode(_prefixes(grouped, spec), spec.max_problem_tokens)
    items = []
    for question, enc in zip(questions, q_ids, strict=True):
        rows = grouped[question]
        suffixes = vocab.encode(
            [extractor_suffix(spec.templates, [tuple(g) for g in r["group"]], r["op"])
             for r in rows],
            spec.max_suffix_tokens,
        )
        targets = vocab.encode([" " + r["target"] for r in rows])
        blocks, starts = [], []
        for suffix, target in zip(suffixes, targets, strict=True):
            _check_no_pad(list(suffix.ids) + list(target.ids), vocab.pad,
                          f"extractor {rows[0].get('id')}")
            blocks.append(list(suffix.ids) + list(target.ids) + [vocab.eos])
            starts.append(len(suffix.ids))
        _check_no_pad(enc.ids, vocab.pad, f"extractor {rows[0].get('id')}")
        items.append(PackedItem(list(enc.ids), blocks, starts,
                                [" ".join(r["target"].split()) for r in rows], starts))
    return items


# --------------------------------------------------------------------------- batches


def bucketed_batches(lengths: Sequence[int], batch_size: int, chunk: int,
                     rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices; lengths are sorted within chunks to cut padding."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * max(1, chunk)
    for start in range(0, len(order), span):
        part = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def eval_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic length-sorted batches for evaluation."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate_segmenter(items: list[SegItem], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask and labels (pads ignored)."""
    width = max(len(it) for it in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.ids)
        ids[row, :n] = torch.tensor(item.ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(item.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_packed(items: list[PackedItem], pad: int, *, extractor: bool,
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Packed rows with a 4D block mask, position ids and the gather indices.

    For the classifier, ``rows``/``cols`` point at the last token of each block
    and ``targets`` holds the operation labels. For the extractor they point at
    every position whose next token is a target token (or ``<eos>``) and
    ``targets`` holds that next token; ``block_of`` maps each position to its
    (global) block number so exact match can be computed per block.
    """
    width = max(len(it) for it in items)
    batch = len(items)
    ids = torch.full((batch, width), pad, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    block = torch.full((batch, width), -1, dtype=torch.long)
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    block_of: list[int] = []
    n_blocks = 0
    for r, item in enumerate(items):
        q = len(item.question)
        ids[r, :q] = torch.tensor(item.question, dtype=torch.long)
        positions[r, :q] = torch.arange(q)
        block[r, :q] = 0
        at = q
        for b, tokens in enumerate(item.blocks):
            n = len(tokens)
            ids[r, at:at + n] = torch.tensor(tokens, dtype=torch.long)
            positions[r, at:at + n] = torch.arange(q, q + n)
            block[r, at:at + n] = b + 1
            if extractor:
                start = item.labels[b]
                for k in range(start, n):  # position at + k - 1 predicts tokens[k]
                    rows.append(r)
                    cols.append(at + k - 1)
                    targets.append(tokens[k])
                    block_of.append(n_blocks)
            else:
                rows.append(r)
                cols.append(at + n - 1)
                targets.append(item.labels[b])
                block_of.append(n_blocks)
            n_blocks += 1
            at += n
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    query, key = block[:, :, None], block[:, None, :]
    allowed = causal & ((key == query) | ((key == 0) & (query >= 0)))
    mask = torch.zeros((batch, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "rows": torch.tensor(rows, dtype=torch.long),
        "cols": torch.tensor(cols, dtype=torch.long),
        "targets": torch.tensor(targets, dtype=torch.long),
        "block_of": torch.tensor(block_of, dtype=torch.long),
        "n_blocks": torch.tensor(n_blocks),
    }


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def packed_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  head: torch.nn.Module) -> torch.Tensor:
    """Backbone over packed rows, then the head at the gathered positions only (an
    encoder turned decoder reads them through its ``causal_states``)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    if hasattr(model, "causal_states"):
        hidden = model.causal_states(**inputs).last_hidden_state
    else:
        hidden = model.model(**inputs, use_cache=False).last_hidden_state
    return head(hidden[batch["rows"], batch["cols"]])


# --------------------------------------------------------------------------- tasks


class Task:
    """One specialist: how to batch, score and evaluate it."""

    name: str
    metric: str

    def __init__(self, train: list[Any], dev: list[Any], vocab: Vocab, spec: SolverSpec):
        self.train, self.dev, self.vocab, self.spec = train, dev, vocab, spec
        self.class_weights: torch.Tensor | None = None  # per label, for a classifier's loss

    def weighted_cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor,
                               ignore_index: int = -100) -> torch.Tensor:
        """Cross-entropy, each label weighted by ``class_weights`` when set (a weighted mean)."""
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index)

    def collate(self, items: list[Any]) -> dict[str, torch.Tensor]:
        """Tensors for a batch of items."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean training loss of a batch."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """Dev figures; ``self.metric`` is the one model selection uses."""
        raise NotImplementedError


class SegmenterTask(Task):
    """C1: BIO token classification, cross-entropy over real tokens."""

    name, metric = "segmenter", "span_f1"

    def collate(self, items: list[SegItem]) -> dict[str, torch.Tensor]:
        return collate_segmenter(items, self.vocab.pad)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                               ignore_index=IGNORE)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        model.eval()
        tp = n_pred = n_gold = 0
        correct_tokens = total_tokens = exact = 0
        for idx in eval_batches([len(x) for x in self.dev], batch_size):
            items = [self.dev[i] for i in idx]
            batch = _to(self.collate(items), device)
            best = model(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).logits.argmax(-1).cpu()
            for row, item in enumerate(items):
                labels = best[row, : len(item.ids)].tolist()
                correct_tokens += sum(
                    a == b for a, b in zip(labels, item.labels, strict=True))
                total_tokens += len(item.ids)
                pred = set(spans_from_bio(item.question, item.offsets, labels))
                gold = set(item.gold)
                tp += len(pred & gold)
                n_pred += len(pred)
                n_gold += len(gold)
                exact += pred == gold
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "span_f1": f1,
            "span_precision": precision,
            "span_recall": recall,
            "problem_exact": exact / max(1, len(self.dev)),
            "token_accuracy": correct_tokens / max(1, total_tokens),
        }

    def label_ceiling(self) -> float:
        """Span F1 of the gold BIO labels themselves (token-alignment ceiling)."""
        tp = n_pred = n_gold = 0
        for item in self.dev:
            pred = set(spans_from_bio(item.question, item.offsets, item.labels))
            gold = set(item.gold)
            tp, n_pred, n_gold = tp + len(pred & gold), n_pred + len(pred), n_gold + len(gold)
        return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0


class ClassifierTask(Task):
    """C2: operation of each group, read at its last token; with ``REJECT`` records
    (``mycelium-train data --reject-groups``) also whether the group is a step at all."""

    name, metric = "classifier", "accuracy"

    @property
    def reject(self) -> bool:
        """Whether the train records hold the reject label (its index follows the ops)."""
        index = len(self.spec.operations)
        return any(index in item.labels for item in self.train)

    def collate(self, items: list[PackedItem]) -> dict[str, torch.Tensor]:
        return collate_packed(items, self.vocab.pad, extractor=False)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weighted_cross_entropy(packed_logits(model, batch, model.score),
                                           batch["targets"])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """``accuracy``: the best operation (the reject label aside, as the runtime picks)
        on the groups that are steps; ``reject_accuracy``: the reject label's argmax rate
        on the groups that are not."""
        model.eval()
        tally = OperationTally(len(self.spec.operations))
        for idx in eval_batches([len(x) for x in self.dev], batch_size):
            batch = _to(self.collate([self.dev[i] for i in idx]), device)
            tally.add(packed_logits(model, batch, model.score), batch["targets"])
        return tally.figures()


@dataclass
class OperationTally:
    """Dev figures of an operation classifier, accumulated batch by batch: ``accuracy`` of
    the best operation (the reject label aside, as the runtime picks) on the groups that
    are steps, their mean ``loss``, and ``reject_accuracy`` on the groups that are not."""

    ops: int
    correct: int = 0
    total: int = 0
    rejected: int = 0
    negatives: int = 0
    loss: float = 0.0

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Count one batch: logits (B, labels), target label ids (B,)."""
        steps = targets < self.ops
        self.loss += F.cross_entropy(logits[steps], targets[steps], reduction="sum").item()
        self.correct += (logits[steps, :self.ops].argmax(-1) == targets[steps]).sum().item()
        self.total += int(steps.sum())
        if logits.shape[1] > self.ops:
            self.rejected += (logits[~steps].argmax(-1) == self.ops).sum().item()
            self.negatives += int((~steps).sum())

    def figures(self) -> dict[str, float]:
        """The accumulated figures."""
        out = {"accuracy": self.correct / max(1, self.total),
               "loss": self.loss / max(1, self.total), "groups": self.total}
        if self.negatives:
            out["reject_accuracy"] = self.rejected / self.negatives
        return out


class ExtractorTask(Task):
    """C3: arguments of each (group, op), LM loss on the target tokens and ``<eos>``."""

    name, metric = "extractor", "exact_match"

    def collate(self, items: list[PackedItem]) -> dict[str, torch.Tensor]:
        return collate_packed(items, self.vocab.pad, extractor=True)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(packed_logits(model, batch, model.lm_head), batch["targets"])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """Teacher-forced exact match: equals greedy-decoding exact match (argmax at every
        target step given the correct prefix, ``<eos>`` included)."""
        model.eval()
        exact = blocks = tokens_ok = tokens = 0
        loss = 0.0
        limit = self.spec.max_new_tokens
        for idx in eval_batches([len(x) for x in self.dev], batch_size):
            items = [self.dev[i] for i in idx]
            batch = _to(self.collate(items), device)
            logits = packed_logits(model, batch, model.lm_head)
            loss += F.cross_entropy(logits, batch["targets"], reduction="sum").item()
            hit = (logits.argmax(-1) == batch["targets"]).long()
            n = int(batch["n_blocks"])
            per_block = torch.zeros(n, dtype=torch.long, device=hit.device)
            per_block.index_add_(0, batch["block_of"], 1 - hit)
            lengths = torch.zeros(n, dtype=torch.long, device=hit.device)
            lengths.index_add_(0, batch["block_of"], torch.ones_like(hit))
            # the runtime stops after max_new_tokens: longer targets can't be written whole
            ok = (per_block == 0) & (lengths - 1 <= limit)
            exact += int(ok.sum())
            blocks += n
            tokens_ok += int(hit.sum())
            tokens += len(hit)
        return {"exact_match": exact / max(1, blocks), "token_accuracy": tokens_ok / max(1, tokens),
                "loss": loss / max(1, tokens), "groups": blocks}

    @torch.no_grad()
    def generate_check(self, model: torch.nn.Module, device: torch.device, limit: int,
                       batch_size: int = 64) -> dict[str, float]:
        """Greedy ``generate`` on unpacked, left-padded inputs for the first ``limit`` dev rows."""
        model.eval()
        rows: list[tuple[list[int], str]] = []
        for item in self.dev:
            for block, start, target in zip(item.blocks, item.labels, item.targets,
                                            strict=True):
                rows.append((item.question + block[:start], target))
                if len(rows) >= limit:
                    break
            if len(rows) >= limit:
                break
        exact = 0
        pad = self.vocab.pad
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (seq, _) in enumerate(chunk):
                ids[r, width - len(seq):] = torch.tensor(seq)
                mask[r, width - len(seq):] = 1
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device),
                max_new_tokens=self.spec.max_new_tokens, do_sample=False,
                eos_token_id=self.vocab.eos, pad_token_id=pad,
            )[:, width:].cpu()
            for r, (_, target) in enumerate(chunk):
                new = out[r].tolist()
                if self.vocab.eos in new:
                    new = new[: new.index(self.vocab.eos)]
                text = self.vocab.tokenizer.decode(new, skip_special_tokens=True)
                exact += " ".join(text.split()) == target
        return {"generate_exact_match": exact / max(1, len(rows)), "generate_rows": len(rows)}


# --------------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _optimizer(model: torch.nn.Module, config: FitConfig,
               peak_lr: float | None = None) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices only; each group records its ``peak_lr`` (default
    ``config.lr``): a fresh head on a pretrained encoder (``model.head_parameters()``)
    peaks at ``config.lr``."""
    peak_lr = config.lr if peak_lr is None else peak_lr
    head = getattr(model, "head_parameters", None)
    fresh = {id(p) for p in head()} if head is not None else set()
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for param in model.parameters():
        if id(param) in seen or not param.requires_grad:
            continue
        seen.add(id(param))
        groups.setdefault((param.ndim >= 2, id(param) in fresh), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": config.weight_decay if decay else 0.0,
          "peak_lr": config.lr if is_head else peak_lr}
         for (decay, is_head), params in groups.items()],
        lr=peak_lr, betas=(0.9, 0.98), eps=1e-8,
    )


def lr_factor(step: int, total: int, warmup: int, progress_time: float, floor: float) -> float:
    """Linear warmup, then cosine decay to ``floor`` over max(step, time) progress."""
    if step < warmup:
        return (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), progress_time)
    progress = min(1.0, max(0.0, progress))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    """What one specialist's training produced."""

    model: torch.nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best: dict[str, float]
    seconds: float
    steps: int


def train_task(task: Task, model: torch.nn.Module, config: FitConfig, device: torch.device,
               log: Log = _stderr, batch_size: int | None = None,
               lr: float | None = None) -> TrainResult:
    """Train one specialist; keep the weights of the best dev epoch (``lr``: peak learning
    rate, default ``config.lr``)."""
    batch_size = batch_size or config.batch_size
    peak_lr = lr if lr is not None else config.lr
    model.to(device)
    decoder = hasattr(model, "model")  # the residual dropout hooks are Qwen2's
    hooks = add_dropout(model, config.dropout) if config.dropout > 0 and decoder else []
    optimizer = _optimizer(model, config, peak_lr)
    rng = random.Random(config.seed)
    lengths = [len(x) for x in task.train]
    steps_per_epoch = math.ceil(len(task.train) / batch_size)
    total = max(1, steps_per_epoch * config.epochs)
    warmup = min(config.warmup_steps, max(1, total // 20))
    budget = config.minutes * 60.0
    start = time.perf_counter()
    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best = -1, {task.metric: -1.0}
    step = 0
    out_of_time = False
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses = []
        epoch_start = time.perf_counter()
        for idx in bucketed_batches(lengths, batch_size, config.bucket_chunk, rng):
            elapsed = time.perf_counter() - start
            if budget > 0 and elapsed >= budget:
                out_of_time = True
                break
            factor = lr_factor(step, total, warmup, elapsed / budget if budget > 0 else 0.0,
                               config.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * factor
            batch = _to(task.collate([task.train[i] for i in idx]), device)
            loss = task.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            losses.append(loss.item())
            step += 1
        if not losses:
            break
        dev = task.evaluate(model, device, batch_size)
        record = {
            "epoch": epoch,
            "steps": step,
            "partial": out_of_time,
            "train_loss": float(np.mean(losses)),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - epoch_start, 1),
            "elapsed_seconds": round(time.perf_counter() - start, 1),
            "dev": dev,
        }
        history.append(record)
        figures = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in dev.items())
        log(f"[{task.name}] epoch {epoch}{' (partial)' if out_of_time else ''} steps {step} "
            f"loss {record['train_loss']:.4f} dev {figures} ({record['elapsed_seconds']:.0f} s)")
        if dev[task.metric] > best[task.metric]:
            best, best_epoch = dev, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in
                                        model.state_dict().items()})
        if out_of_time:
            break
        if config.patience and epoch - best_epoch >= config.patience:
            log(f"[{task.name}] no better dev {task.metric} for {config.patience} epochs: "
                "stopping")
            break
    for hook in hooks:
        hook.remove()
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(model, history, best_epoch, best, time.perf_counter() - start, step)


# --------------------------------------------------------------------------- fit


def load_tasks(data: Path, vocab: Vocab, spec: SolverSpec, names: Sequence[str],
               augment_copies: int = 0, seed: int = 0,
               encoder_classifier: str | None = None) -> dict[str, Task]:
    """Read and encode the supervision files of the requested specialists (train records
    with ``augment_copies`` number-resampled copies each); ``encoder_classifier``: the
    classifier is an encoder reading one text pair per group ("pair") or each problem once
    ("span-groups")."""
    from .augment import augment
    from .pair_classifier import PairClassifierTask, pair_items
    from .span_group import SpanGroupClassifierTask, span_group_items

    tasks: dict[str, Task] = {}
    for name in names:
        records = read_jsonl(data / f"{name}.jsonl")
        records += augment(records, augment_copies, seed)
        encode: Callable[..., list[Any]] = {
            "segmenter": segmenter_items, "classifier": classifier_items,
            "extractor": extractor_items}[name]
        cls: type[Task] = {"segmenter": SegmenterTask, "classifier": ClassifierTask,
                           "extractor": ExtractorTask}[name]
        if name == "classifier" and encoder_classifier == "pair":
            encode, cls = pair_items, PairClassifierTask
        elif name == "classifier" and encoder_classifier == "span-groups":
            encode, cls = span_group_items, SpanGroupClassifierTask
        elif name == "classifier" and encoder_classifier is not None:
            raise ValueError(f"unknown classifier head {encoder_classifier!r} "
                             "(pair, span-groups)")
        tasks[name] = cls(encode(records, "train", vocab, spec),
                          encode(records, "dev", vocab, spec), vocab, spec)
    return tasks


def build_model(name: str, config: FitConfig, vocab: Vocab, spec: SolverSpec,
                seed: int, reject: bool = False) -> torch.nn.Module:
    """A freshly initialised specialist (seeded)."""
    torch.manual_seed(seed)
    tokens = vocab.token_ids
    encoder = config.encoder_init(name)
    if name == "segmenter" and encoder is not None:
        return encoder_segmenter(encoder, spec.segmenter_labels)
    if name == "segmenter":
        return build_segmenter(config.size, tokens, spec.segmenter_labels)
    if name == "classifier" and encoder is not None and config.classifier_head == "span-groups":
        from .span_group import span_group_classifier

        if config.classifier_layers:
            raise ValueError("--classifier-layers applies to the pair classifier only")
        return span_group_classifier(encoder, classifier_labels(spec, reject))
    if name == "classifier" and encoder is not None:
        return encoder_classifier(encoder, classifier_labels(spec, reject),
                                  config.classifier_layers)
    if name == "classifier":
        return build_classifier(config.size, tokens, classifier_labels(spec, reject))
    if encoder is not None:
        from .arg_decoder import argument_decoder

        assert vocab.source_ids is not None, "an encoder extractor needs its cut vocabulary"
        return argument_decoder(encoder, vocab.source_ids, vocab.output_tokens)
    return build_extractor(config.size, tokens, spec.max_new_tokens)


def save_model(model: torch.nn.Module, folder: Path, tokenizer_json: bytes) -> None:
    """``save_pretrained`` (safetensors) plus a copy of tokenizer.json (as read at the start)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(folder, safe_serialization=True)
    (folder / "tokenizer.json").write_bytes(tokenizer_json)


def train_answers(data: Path) -> Iterator[Fraction]:
    """The final answers of the train split's problems (``problems.jsonl``)."""
    for record in read_jsonl(data / "problems.jsonl"):
        if record.get("split") == "train" and record.get("answer") is not None:
            yield Fraction(record["answer"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_search(data: Path) -> SearchSpec:
    """The search structure ``data``'s programs were fitted to (``mycelium-train data
    --search``, recorded in its coverage.json), which the checkpoint then serves with."""
    coverage = Path(data) / "coverage.json"
    settings = json.loads(coverage.read_text()).get("search", {}) if coverage.is_file() else {}
    return replace(SearchSpec(), **{key: tuple(value) if isinstance(value, list) else value
                                    for key, value in settings.items()})


def fit(data: Path, out: Path, config: FitConfig, log: Log = _stderr) -> dict[str, Any]:
    """Train the specialists on ``data`` and write the checkpoint folder ``out``."""
    wall = time.perf_counter()
    data, out = Path(data), Path(out)
    spec = SolverSpec(templates=MARKED_TEMPLATES) if config.span_markers else SolverSpec()
    spec = replace(spec, search=data_search(data))
    seed_everything(config.seed)
    device = resolve_device(config.device)
    tokenizer_path = data / "tokenizer.json"
    tokenizer_json = tokenizer_path.read_bytes()  # the data folder may be rewritten meanwhile
    data_files = {p.name: _sha256(p) for p in sorted(data.glob("*.json*"))}
    vocab = Vocab.load(tokenizer_path, spec)
    if vocab.pad != 0:
        raise ValueError(f"tokenizer: <pad> must be id 0, got {vocab.pad}")
    names = ("segmenter", "classifier", "extractor")
    encoders = {n: folder for n in names if (folder := config.encoder_init(n)) is not None}
    vocabs = {name: vocab for name in names}
    vocabs.update({name: Vocab.for_encoder(folder) for name, folder in encoders.items()
                   if name != "extractor"})
    if "extractor" in encoders:
        texts = _prefixes(_by_question(read_jsonl(data / "extractor.jsonl"), "train"), spec)
        vocabs["extractor"] = Vocab.for_argument_decoder(encoders["extractor"], spec, texts)
    tasks = {}
    for name in config.models:
        tasks.update(load_tasks(data, vocabs[name], spec, [name], config.augment, config.seed,
                                encoder_classifier=config.classifier_head
                                if "classifier" in encoders else None))
    for name, task in tasks.items():
        log(f"[{name}] {len(task.train)} train / {len(task.dev)} dev items")
        if name == "classifier" and config.reject_weight != 1.0:
            if not getattr(task, "reject", False):
                raise ValueError("--reject-weight needs classifier records with the reject "
                                 "label (`mycelium-train data --reject-groups`)")
            task.class_weights = reject_class_weights(spec, config.reject_weight)

    built = [build_model(n, config, vocabs[n], spec, 0) for n in names]
    params = {n: parameter_count(m) for n, m in zip(names, built, strict=True)}
    # a pretrained encoder ships int8 (embeddings included): count it at 1 byte per weight
    total_bytes = export_bytes([m for n, m in zip(names, built, strict=True)
                                if n not in encoders]) + sum(params[n] for n in encoders)
    del built
    log(f"models: {params} parameters, {total_bytes / 2**20:.1f} MiB together "
        f"({'the encoders at int8, the others ' if encoders else ''}fp32) on {device}")
    if total_bytes >= MAX_EXPORT_BYTES:
        raise ValueError(f"models too large: {total_bytes} bytes >= {MAX_EXPORT_BYTES}")

    backbone = None
    pretrain_info: dict[str, Any] | None = None
    if config.backbone:
        from safetensors.torch import load_file

        backbone = load_file(config.backbone)
        pretrain_info = {"backbone": config.backbone,
                         "backbone_sha256": _sha256(Path(config.backbone))}
        log(f"backbone read from {config.backbone}")
    elif config.pretrain_minutes > 0:
        from .pretrain import pretrain_backbone

        answers = Path(config.pretrain_text) if config.pretrain_text else None
        backbone, pretrain_info = pretrain_backbone(data, vocab, spec, config, device, log,
                                                    answers=answers)

    out.mkdir(parents=True, exist_ok=True)
    if backbone is not None:
        from safetensors.torch import save_file

        save_file(backbone, str(out / BACKBONE_FILE))
    report: dict[str, Any] = {
        "config": asdict(config),
        "seed": config.seed,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "size": size_summary(SIZES[config.size]),
        "parameters": params,
        "export_bytes_fp32": total_bytes,
        "data": str(data),
        "data_sha256": data_files,
        "pretrain": pretrain_info,
        "models": {},
    }
    for offset, name in enumerate(("segmenter", "classifier", "extractor")):
        if name not in tasks:
            continue
        task = tasks[name]
        reject = bool(getattr(task, "reject", False))
        pretrained = name in encoders
        model = build_model(name, config, vocabs[name], spec, config.seed * 1000 + offset, reject)
        if backbone is not None and not pretrained:
            load_backbone(model, backbone)
        seed_everything(config.seed * 1000 + offset)
        batch = config.batch_size if name == "segmenter" else config.packed_batch_size
        result = train_task(task, model, config, device, log, batch_size=batch,
                            lr=config.init_lr if pretrained else None)
        entry: dict[str, Any] = {
            "train_items": len(task.train),
            "dev_items": len(task.dev),
            "epochs": result.history,
            "best_epoch": result.best_epoch,
            "best_dev": result.best,
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
        }
        if isinstance(task, SegmenterTask):
            entry["dev_label_ceiling_span_f1"] = task.label_ceiling()
        if isinstance(task, ExtractorTask) and config.generate_eval > 0 and not pretrained:
            check = task.generate_check(result.model, device, config.generate_eval)
            entry["best_dev"] = {**result.best, **check}
            log(f"[extractor] greedy generate on {check['generate_rows']} dev rows: "
                f"exact match {check['generate_exact_match']:.4f}")
        own = vocabs[name].json
        save_model(result.model, out / name,
                   own.encode("utf-8") if own is not None
                   else (encoders[name] / "tokenizer.json").read_bytes() if pretrained
                   else tokenizer_json)
        report["models"][name] = entry
        log(f"[{name}] best epoch {result.best_epoch}: {task.metric} "
            f"{result.best[task.metric]:.4f}, {result.seconds:.0f} s")
    if (data / "problems.jsonl").is_file():
        spec = replace(spec, answer_prior=fit_answer_prior(train_answers(data)))
        log(f"answer prior (log-probabilities from the train answers): {spec.answer_prior}")
    with open(out / "mycelium.json", "w", encoding="utf-8") as handle:
        json.dump(spec.to_dict(), handle, indent=2)
    report["wall_seconds"] = round(time.perf_counter() - wall, 1)
    with open(out / "training.json", "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    log(f"checkpoint written to {out} in {report['wall_seconds']:.0f} s")
    return report

