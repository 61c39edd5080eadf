"""A specialist as the stages call it: its runner, tokenizer and counters, and how many
rows one call of a cached decoder may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .manifest import KVCacheSpec
from .models import DecoderRunner, DecoderState
from .stats import Stats, timed
from .tokenization import TextTokenizer

MAX_ROWS_PER_CALL = 256  # decoder rows per onnxruntime call
# cache bytes per decoder call (a 0.5B shape gets fewer rows); a call holds its past, its
# present and a gathered copy at once, so this bounds a solve's peak memory (256 rows of
# 140 tokens held 0.4 GB; benchmarks/RESULTS.md, "Memory")
KV_BUDGET_BYTES = 32 * 2**20


def rows_per_call(kv: KVCacheSpec | None, prefix: DecoderState, suffix_tokens: int,
                  new_tokens: int = 0) -> int:
    """Rows per decoder call: at most MAX_ROWS_PER_CALL and KV_BUDGET_BYTES of cache
    (prefix + suffix + generated tokens, every layer, key and value)."""
    if kv is None:
        return MAX_ROWS_PER_CALL
    length = prefix.mask.shape[1] + suffix_tokens + new_tokens
    itemsize = 2 if kv.dtype == "float16" else 4
    per_row = 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * length * itemsize
    return max(1, min(MAX_ROWS_PER_CALL, KV_BUDGET_BYTES // max(per_row, 1)))


@dataclass(frozen=True)
class Specialist:
    """One model as a stage uses it: ``name`` (segmenter, classifier, extractor) keys its
    token counter; tokenizing is timed as the ``tokenize`` stage."""

    name: str
    runner: Any
    tokenizer: TextTokenizer
    stats: Stats

    def prefix_states(self, texts: list[str], max_tokens: int
                      ) -> tuple[DecoderState, np.ndarray]:
        """The decoder's cache after each text (row ``i`` for text ``i``) and its logits."""
        with timed(self.stats, "tokenize"):
            encoded = self.tokenizer.encode_batch(texts, max_tokens)
        ids = [enc.ids for enc in encoded]
        self.stats.tokens[self.name] += sum(len(x) for x in ids)
        runner: DecoderRunner = self.runner
        logits, state = runner.prefill(ids)
        return state, logits

    def suffix_ids(self, suffixes: list[str], max_tokens: int) -> list[list[int]]:
        """The token ids of the group suffixes, each cut to ``max_tokens``."""
        with timed(self.stats, "tokenize"):
            encoded = self.tokenizer.encode_batch(suffixes, max_tokens)
        return [enc.ids for enc in encoded]

    def rows_per_call(self, prefix: DecoderState, suffix_tokens: int,
                      new_tokens: int = 0) -> int:
        """Rows per call of this specialist's runner (see :func:`rows_per_call`)."""
        return rows_per_call(getattr(self.runner, "kv", None), prefix, suffix_tokens,
                             new_tokens)
