"""Tokenization with character offsets, from an artifacts tokenizer.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _unpadded(encoding: Any) -> int:
    """Tokens before the padding a tokenizer.json's own padding setting adds (the
    runtime's tokenizers pad nothing; a tokenizer read as shipped may)."""
    return int(sum(encoding.attention_mask))


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
        first.truncate(min(first_tokens, _unpadded(first)))
        second.truncate(min(second_tokens, _unpadded(second)))
        joined = tokenizer.post_process(first, second, add_special_tokens=True)
        n = _unpadded(joined)
        out.append(EncodedPair(list(joined.ids[:n]), list(joined.type_ids[:n])))
    return out


def encode_framed(tokenizer: Tokenizer, texts: list[str], max_tokens: int) -> list[Encoded]:
    """Encode texts one per sequence the way the tokenizer's post-processor frames a
    single text (e.g. ``[CLS] text [SEP]``), the text cut to ``max_tokens`` first; a
    special token's offsets are (0, 0). A span-group classifier reads problems so."""
    out = []
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        enc.truncate(min(max_tokens, _unpadded(enc)))
        framed = tokenizer.post_process(enc, None, add_special_tokens=True)
        n = _unpadded(framed)
        offsets = [(0, 0) if special else offset for offset, special
                   in zip(framed.offsets[:n], framed.special_tokens_mask[:n], strict=True)]
        out.append(Encoded(list(framed.ids[:n]), offsets))
    return out


def span_tokens(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[list[int]]:
    """The token positions each character span ``(start, end)`` overlaps (special and empty
    tokens never do)."""
    return [[t for t, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
            for start, end in spans]


def group_tokens(per_span: list[list[int]], groups: list[list[int]]) -> list[list[int]]:
    """The sorted token positions of each group of span indices (``span_tokens`` rows)."""
    return [sorted({t for index in group for t in per_span[index]}) for group in groups]


@dataclass
class GroupedProblem:
    """A framed problem's token ids and, per span group, the positions of its spans."""

    ids: list[int]
    groups: list[list[int]]


def group_feed(rows: list[GroupedProblem], pad_id: int) -> dict[str, np.ndarray]:
    """A span-group classifier's inputs: right-padded ids and mask (B, T), and
    ``group_tokens`` (B, G, T) int64, 1 where a token belongs to a group (a padded or
    span-free group is all zeros)."""
    ids, mask = pad_batch([row.ids for row in rows], pad_id, left=False)
    width = max((len(row.groups) for row in rows), default=0)
    members = np.zeros((len(rows), max(width, 1), ids.shape[1]), dtype=np.int64)
    for b, row in enumerate(rows):
        for g, positions in enumerate(row.groups):
            members[b, g, positions] = 1
    return {"input_ids": ids, "attention_mask": mask, "group_tokens": members}


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

    def encode_framed(self, texts: list[str], max_tokens: int) -> list[Encoded]:
        """Texts with this tokenizer's special tokens (see :func:`encode_framed`)."""
        return encode_framed(self._tokenizer, texts, max_tokens)

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
