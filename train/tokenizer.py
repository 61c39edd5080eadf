"""The shared byte-level BPE tokenizer, its argument tokens, and BIO labels from offsets.

- Byte level, so any input tokenizes; offsets are character offsets into the input.
- The special tokens of :data:`mycelium.runtime.spec.SPECIAL_TOKENS` come first (``<pad>``
  has id 0), then the BPE vocabulary, then the argument tokens :data:`ARG_TOKENS`.
- Argument tokens carry their leading space (``" Q0"``, ``" R1"``, ``" C60"``), so the
  extractor writes one token per argument: ``" Q0 C2"`` is two tokens and decodes back to
  ``" Q0 C2"``. The same tokens serve the group items (``" Q0=48"``) of the templates;
  the operation names and the empty group's ``" none"`` are single tokens too
  (:data:`WORD_TOKENS`, matched as whole words only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from mycelium.runtime.spec import OPERATIONS, SEGMENTER_LABELS, SPECIAL_TOKENS

from .sources import CONSTANTS

NUM_QUANTITY_TOKENS = 16  # Q0..Q15 (the search keeps at most 12 spans)
NUM_RESULT_TOKENS = 15  # R1..R15
ARG_TOKENS: tuple[str, ...] = (
    *(f" Q{i}" for i in range(NUM_QUANTITY_TOKENS)),
    *(f" R{k}" for k in range(1, NUM_RESULT_TOKENS + 1)),
    *(f" {text}" for text in CONSTANTS.values()),
)
WORD_TOKENS: tuple[str, ...] = (*(f" {op}" for op in OPERATIONS), " none")  # template words
DEFAULT_VOCAB_SIZE = 4096
BIO = {label: i for i, label in enumerate(SEGMENTER_LABELS)}  # O B-QTY I-QTY B-UNUSED I-UNUSED


def special_tokens() -> list[str]:
    """Special token strings, ``<pad>`` first (id 0)."""
    pad = SPECIAL_TOKENS["pad"]
    return [pad, *(token for name, token in SPECIAL_TOKENS.items() if name != "pad")]


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Train the byte-level BPE on ``texts`` and add the special and argument tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_tokens([AddedToken(token, normalized=False) for token in ARG_TOKENS])
    tokenizer.add_tokens(
        [AddedToken(token, normalized=False, single_word=True) for token in WORD_TOKENS]
    )
    check_tokenizer(tokenizer)
    return tokenizer


def check_tokenizer(tokenizer: Tokenizer) -> None:
    """Raise ``ValueError`` unless pad is id 0 and every argument token round-trips alone."""
    if tokenizer.token_to_id(SPECIAL_TOKENS["pad"]) != 0:
        raise ValueError("tokenizer: <pad> must have id 0")
    for token in (*ARG_TOKENS, *WORD_TOKENS):
        ids = tokenizer.encode(token, add_special_tokens=False).ids
        if len(ids) != 1 or tokenizer.decode(ids, skip_special_tokens=True) != token:
            raise ValueError(f"tokenizer: argument token {token!r} does not round-trip")


def _span_bounds(span: Any) -> tuple[int, int]:
    if isinstance(span, dict):
        return int(span["start"]), int(span["end"])
    if hasattr(span, "start") and hasattr(span, "end"):
        return int(span.start), int(span.end)
    start, end = span
    return int(start), int(end)


def token_offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """Character offsets of ``text``'s tokens (no special tokens added)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)  # transformers' fast tokenizers
    return [tuple(o) for o in backend.encode(text, add_special_tokens=False).offsets]


def bio_labels(
    tokenizer: Any, question: str, spans: Sequence[Any], used: Sequence[bool] | None = None
) -> list[int]:
    """Per-token segmenter labels of ``question``: indices into
    :data:`mycelium.runtime.spec.SEGMENTER_LABELS` (0 = O, 1 = B-QTY, 2 = I-QTY for a
    quantity the solution uses, 3 = B-UNUSED, 4 = I-UNUSED for one it does not).

    ``spans`` are character spans as ``(start, end)`` pairs, ``{"start", "end"}`` dicts or
    objects with ``start``/``end``; ``used`` gives one flag per span (``None``: all used).
    A token is B when it is the first token overlapping a span, I when it overlaps a span
    that an earlier token already overlaps, O otherwise.
    """
    flags = [True] * len(spans) if used is None else [bool(u) for u in used]
    if len(flags) != len(spans):
        raise ValueError("bio_labels: one used flag per span")
    bounds = sorted(zip(map(_span_bounds, spans), flags, strict=True))
    labels = []
    started: set[int] = set()
    for start, end in token_offsets(tokenizer, question):
        label = BIO["O"]
        if end > start:
            for index, ((span_start, span_end), is_used) in enumerate(bounds):
                if start < span_end and end > span_start:
                    kind = "QTY" if is_used else "UNUSED"
                    label = BIO[f"I-{kind}"] if index in started else BIO[f"B-{kind}"]
                    started.add(index)
                    break
        labels.append(label)
    return labels


def spans_align(tokenizer: Any, question: str, spans: Sequence[Any]) -> bool:
    """Whether every span starts at a token start and ends at a token end (exact decoding)."""
    offsets = token_offsets(tokenizer, question)
    starts = {start for start, end in offsets if end > start}
    ends = {end for start, end in offsets if end > start}
    return all(s in starts and e in ends for s, e in map(_span_bounds, spans))
