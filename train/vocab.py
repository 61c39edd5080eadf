"""The tokenizer a specialist reads and the special ids training needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from mycelium.runtime.spec import SolverSpec

from .models import TokenIds


@dataclass
class Vocab:
    """The tokenizer and the special ids the trainer needs."""

    tokenizer: Tokenizer
    pad: int
    eos: int

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

    @property
    def token_ids(self) -> TokenIds:
        """Ids for the model configs."""
        return TokenIds(self.pad, self.eos, self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: list[str], limit: int | None = None) -> list[Any]:
        """Encodings without special tokens added (ids, offsets), truncated to ``limit``."""
        out = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        if limit is None:
            return out
        return [Truncated(e.ids[:limit], e.offsets[:limit]) for e in out]


@dataclass
class Truncated:
    """An encoding cut to a token limit (its ids and character offsets)."""

    ids: list[int]
    offsets: list[tuple[int, int]]
