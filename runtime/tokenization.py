"""Tokenization with character offsets, from an artifacts tokenizer.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .errors import ArtifactsError


@dataclass
class Encoded:
    """One text's token ids and (start, end) character offsets."""

    ids: list[int]
    offsets: list[tuple[int, int]]


@dataclass
class EncodedPair:
    """A text pair as one sequence: ids with the tokenizer's special tokens, segment ids."""

    ids: list[int]
    type_ids: list[int]


def encode_pairs(tokenizer: Tokenizer, pairs: list[tuple[str, str]], first_tokens: int,
                 second_tokens: int) -> list[EncodedPair]:
    """Encode ``(a, b)`` pairs the way the tokenizer's post-processor joins two segments
    (e.g. ``[CLS] a [SEP] b [SEP]`` with type ids 0 then 1); ``a`` is cut to
    ``first_tokens`` and ``b`` to ``second_tokens`` before the special tokens are added.
    Both the trainer and the runtime encode an encoder classifier's inputs with it."""
    if not pairs:
        return []
    firsts = tokenizer.encode_batch([a for a, _ in pairs], add_special_tokens=False)
    seconds = tokenizer.encode_batch([b for _, b in pairs], add_special_tokens=False)
    out = []
    for first, second in zip(firsts, seconds, strict=True):
        first.truncate(first_tokens)
        second.truncate(second_tokens)
        joined = tokenizer.post_process(first, second, add_special_tokens=True)
        out.append(EncodedPair(list(joined.ids), list(joined.type_ids)))
    return out


class TextTokenizer:
    """A thin wrapper of `tokenizers.Tokenizer` that never adds special tokens."""

    def __init__(self, path: Path):
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ArtifactsError(f"artifacts: cannot read tokenizer {path.name}: {exc}") from None
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def token_id(self, token: str) -> int:
        """Id of a special token; raises ArtifactsError when absent."""
        value = self._tokenizer.token_to_id(token)
        if value is None:
            raise ArtifactsError(f"artifacts: tokenizer has no token {token!r}")
        return value

    def encode_batch(self, texts: list[str], max_tokens: int | None = None) -> list[Encoded]:
        """Encode texts (keeping offsets), truncated to ``max_tokens``."""
        out = []
        for enc in self._tokenizer.encode_batch(texts, add_special_tokens=False):
            ids, offsets = enc.ids, enc.offsets
            if max_tokens is not None:
                ids, offsets = ids[:max_tokens], offsets[:max_tokens]
            out.append(Encoded(list(ids), list(offsets)))
        return out

    def encode_pairs(self, pairs: list[tuple[str, str]], first_tokens: int,
                     second_tokens: int) -> list[EncodedPair]:
        """Text pairs with this tokenizer's special tokens (see :func:`encode_pairs`)."""
        return encode_pairs(self._tokenizer, pairs, first_tokens, second_tokens)

    def decode(self, ids: list[int]) -> str:
        """Text of ids, special tokens skipped."""
        return self._tokenizer.decode(ids, skip_special_tokens=True)


def pair_feed(rows: list[EncodedPair], pad_id: int) -> dict[str, np.ndarray]:
    """An encoder classifier's inputs for encoded pairs: right-padded ids, mask and
    token type ids (padding is segment 0), each (B, T) int64."""
    ids, mask = pad_batch([row.ids for row in rows], pad_id, left=False)
    types, _ = pad_batch([row.type_ids for row in rows], 0, left=False)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def pad_batch(
    sequences: list[list[int]], pad_id: int, *, left: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Pad to a (B, T) int64 id matrix and its attention mask."""
    width = max((len(s) for s in sequences), default=0)
    width = max(width, 1)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if not seq:
            continue
        if left:
            ids[row, width - len(seq):] = seq
            mask[row, width - len(seq):] = 1
        else:
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
    return ids, mask
