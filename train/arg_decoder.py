"""C3 from a pretrained encoder: BERT layers read causally, with a KV cache.

The 4M-parameter Qwen2 extractor learns English from 6.7k problems only. Here the
extractor starts from a pretrained English encoder (all-MiniLM-L6-v2): the same layers
with a causal attention mask (each token attends to the tokens before it, so a problem's
keys and values are computed once and reused by all its groups, as for a Qwen2
decoder), absolute positions, and a small fresh head over the first
``output_tokens`` ids of the vocabulary, where the argument grammar's tokens live.

The tokenizer is the encoder's own WordPiece with the grammar's tokens (special tokens,
``Q0``.., ``R1``.., the constants, the operation names) first, so that every argument is
one token below ``output_tokens``; the vocabulary is cut to the pieces the train
problems use plus every ASCII character (any word still tokenizes), which keeps the
shipped model small.

Measured (train/README.md, "The extractor from a pretrained encoder"): all-MiniLM-L6-v2
read this way matches the Qwen2 extractor (dev exact match 0.644 vs 0.648) and misses
the same steps, so the default keeps the Qwen2 one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from mycelium.export.wrappers import additive_mask, allowed_keys

ARGUMENT_DECODER_CLASS = "BertForArgumentDecoding"
SLOT = "[unused{n}]"  # a BERT vocabulary's unused rows: the grammar tokens start from them


def grammar_tokens(*groups: Iterable[str]) -> list[str]:
    """The tokens the extractor reads or writes as one piece, without leading spaces."""
    out: list[str] = []
    for token in (token for group in groups for token in group):
        token = token.strip()
        if token and token not in out:
            out.append(token)
    return out


def argument_tokenizer(tokenizer_json: str, tokens: Sequence[str], texts: Iterable[str],
                       words: Sequence[str] = ()) -> tuple[str, list[int], int]:
    """The extractor's tokenizer.json from an encoder's WordPiece one.

    New ids: the pad token (id 0, kept), then ``tokens`` (added tokens, matched before
    lower-casing; a grammar word such as ``Q1`` only as a whole word, so ``Q10`` stays one
    token, a bracketed special token such as ``<op>`` anywhere), then the encoder's special
    tokens, every piece the ``texts`` tokenize into and every ASCII character (plain and
    ``##``: any word still tokenizes), in their old order. The model's output ids are the
    first ``1 + len(tokens)``; ``words`` (read, never written: the operation names) join
    ``tokens`` unless the vocabulary already has them. Returns the JSON and, per new id,
    the encoder's row to start from (a grammar token: its ``[unusedN]`` row when the
    vocabulary has one, else -1), and the number of output ids."""
    from tokenizers import Tokenizer

    raw = json.loads(tokenizer_json)
    model = raw["model"]
    if model.get("type") != "WordPiece":
        raise ValueError("an argument decoder needs a WordPiece tokenizer")
    vocab: dict[str, int] = model["vocab"]
    by_id = {i: token for token, i in vocab.items()}
    if 0 not in by_id:
        raise ValueError("the tokenizer's vocabulary has no id 0 (its pad token)")
    clash = [token for token in tokens if token in vocab]
    if clash:
        raise ValueError(f"grammar token {clash[0]!r} is already in the vocabulary")
    tokens = [*tokens, *(word for word in words if word not in vocab and word not in tokens)]
    named = [model.get("unk_token"), *_post_processor_tokens(raw.get("post_processor"))]
    keep = {t["id"] for t in raw["added_tokens"]} | {vocab[t] for t in named if t in vocab}
    for encoding in Tokenizer.from_str(tokenizer_json).encode_batch(
            list(texts), add_special_tokens=False):
        keep.update(encoding.ids)
    keep |= {i for i, token in by_id.items()
             if len(token.removeprefix("##")) == 1 and token.removeprefix("##").isascii()}
    kept = sorted(keep - {0})
    source = [0] + [vocab.get(SLOT.format(n=n), -1) for n in range(len(tokens))] + kept
    names = [by_id[0], *tokens, *(by_id[old] for old in kept)]
    model["vocab"] = {name: new for new, name in enumerate(names)}
    new_id = {old: new for new, old in enumerate(source) if old >= 0}
    added = [{**entry, "id": new_id[entry["id"]]} for entry in raw["added_tokens"]]
    for offset, token in enumerate(tokens):
        bracketed = token.startswith("<") and token.endswith(">")
        added.append({"id": 1 + offset, "content": token, "single_word": not bracketed,
                      "lstrip": False, "rstrip": False, "normalized": False,
                      "special": bracketed})
    raw["added_tokens"] = added
    _remap_post_processor(raw.get("post_processor"), model["vocab"])
    return json.dumps(raw, ensure_ascii=False), source, 1 + len(tokens)


def _post_processor_tokens(processor: Any) -> list[str]:
    """The special tokens a TemplateProcessing adds (e.g. ``[CLS]``, ``[SEP]``)."""
    if not isinstance(processor, dict):
        return []
    return [token for entry in (processor.get("special_tokens") or {}).values()
            for token in entry.get("tokens", [])]


def _remap_post_processor(processor: Any, vocab: dict[str, int]) -> None:
    """Point a TemplateProcessing's special tokens at their new ids (in place)."""
    if not isinstance(processor, dict):
        return
    for entry in (processor.get("special_tokens") or {}).values():
        entry["ids"] = [vocab[token] for token in entry.get("tokens", [])]


class BertForArgumentDecoding(BertPreTrainedModel):
    """BERT layers as a causal decoder with a KV cache and a head over the first
    ``config.output_tokens`` token ids: ``(input_ids, attention_mask) -> logits``."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.bert = BertModel(config, add_pooling_layer=False)
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.LayerNorm(hidden, eps=config.layer_norm_eps),
            nn.Linear(hidden, config.output_tokens),
        )
        self.post_init()

    def get_output_embeddings(self) -> None:
        """No output embeddings to tie: the head is its own (over the output ids only)."""
        return None

    @property
    def lm_head(self) -> nn.Module:
        """The output head (the trainer's extractor task reads ``lm_head``)."""
        return self.head

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters the pretrained encoder does not hold (trained at a higher rate)."""
        return list(self.head.parameters())

    def decode(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor,
               past: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Hidden states (B, T, hidden) of new tokens after ``past`` and the presents.

        ``mask``: additive (B, 1, T, P + T); ``past``: ``[key_0, value_0, key_1, ...]``
        (B, heads, P, head_dim), empty for none; presents come back in that order.
        """
        emb = self.bert.embeddings
        x = (emb.word_embeddings(input_ids) + emb.position_embeddings(position_ids)
             + emb.token_type_embeddings(torch.zeros_like(input_ids)))
        x = emb.dropout(emb.LayerNorm(x))
        batch, seq = input_ids.shape
        heads = self.config.num_attention_heads
        dim = self.config.hidden_size // heads
        presents: list[torch.Tensor] = []
        for index, layer in enumerate(self.bert.encoder.layer):
            attn = layer.attention.self

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(batch, seq, heads, dim).transpose(1, 2)  # (B, H, T, D)

            q, k, v = split(attn.query(x)), split(attn.key(x)), split(attn.value(x))
            if past:
                k = torch.cat((past[2 * index], k), dim=2)
                v = torch.cat((past[2 * index + 1], v), dim=2)
            presents += [k, v]
            scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(dim) + mask
            probs = attn.dropout(torch.softmax(scores.float(), dim=-1).to(v.dtype))
            context = torch.matmul(probs, v).transpose(1, 2).reshape(batch, seq, heads * dim)
            out = layer.attention.output
            x = out.LayerNorm(out.dropout(out.dense(context)) + x)
            h = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(layer.output.dropout(layer.output.dense(h)) + x)
        return x, presents

    def causal_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor) -> BaseModelOutput:
        """The trainer's packed rows: an additive (B, 1, T, T) block mask and positions."""
        hidden, _ = self.decode(input_ids, attention_mask.to(self.dtype), position_ids)
        return BaseModelOutput(last_hidden_state=hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                logits_to_keep: torch.Tensor | None = None, **_: Any) -> CausalLMOutput:
        """Right-padded rows, no cache: logits (B, T, output_tokens), or at the positions
        ``logits_to_keep`` only."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        allowed = allowed_keys(attention_mask, input_ids.shape[1])[:, :, 0]  # (B, 1, T, T)
        positions = (torch.cumsum(attention_mask, dim=-1) - 1).clamp(min=0)
        hidden, _ = self.decode(input_ids, additive_mask(allowed, self.dtype), positions)
        if logits_to_keep is not None:
            hidden = hidden[:, logits_to_keep]
        return CausalLMOutput(logits=self.head(hidden))


def argument_decoder(folder: Path, source: Sequence[int], output_tokens: int
                     ) -> BertForArgumentDecoding:
    """C3 from a pretrained encoder folder: its layers, its word embeddings re-indexed by
    ``source`` (``argument_tokenizer``; -1: a fresh row), a fresh head over the first
    ``output_tokens`` ids."""
    config = BertConfig.from_pretrained(folder)
    encoder = BertModel.from_pretrained(folder, use_safetensors=True, add_pooling_layer=False)
    config.vocab_size = len(source)
    config.output_tokens = output_tokens
    config.tie_word_embeddings = False
    config.architectures = [ARGUMENT_DECODER_CLASS]
    model = BertForArgumentDecoding(config)
    state = encoder.state_dict()
    old = state["embeddings.word_embeddings.weight"]
    rows = torch.tensor(list(source), dtype=torch.long)
    fresh = torch.randn(len(source), old.shape[1]) * config.initializer_range
    state["embeddings.word_embeddings.weight"] = torch.where(
        (rows >= 0)[:, None], old[rows.clamp(min=0)], fresh)
    missing, unexpected = model.bert.load_state_dict(state, strict=False)
    if unexpected or any("position_ids" not in key for key in missing):
        raise ValueError(f"{folder}: encoder weights do not fit ({missing[:3]} {unexpected[:3]})")
    return model

