"""Torch modules that define the exported graphs of Qwen2 models.

They reuse the Hugging Face model's submodules (embeddings, projections, norms,
heads: the weights) but write the forward pass out, so that tracing with the
TorchScript exporter gives a small graph we control: explicit RoPE, grouped
query attention with a KV cache passed as plain tensors, and a head applied to
the last position only.
"""

from __future__ import annotations

import torch
from torch import nn


def rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Qwen2RMSNorm with the module's weight and epsilon, computed in float32."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def allowed_keys(attention_mask: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Which keys each new query may attend: (B, 1, 1, T, S) bool.

    The T new tokens are the last T of the S = P + T positions; query t (absolute
    index P + t) may attend key j iff j <= P + t and attention_mask[b, j] == 1.
    """
    total = attention_mask.shape[1]
    device = attention_mask.device
    query_index = torch.arange(seq_len, device=device) + (total - seq_len)  # (T,)
    key_index = torch.arange(total, device=device)  # (S,)
    causal = key_index[None, :] <= query_index[:, None]  # (T, S)
    allowed = causal[None, :, :] & (attention_mask[:, None, :] > 0)  # (B, T, S)
    return allowed[:, None, None, :, :]


class Qwen2Core(nn.Module):
    """Embeddings and decoder layers of a Hugging Face ``Qwen2Model``, KV cache explicit."""

    def __init__(self, model: nn.Module):
        super().__init__()
        config = model.config
        self.model = model  # the HF Qwen2Model: its submodules hold the weights
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        self.groups = self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        inv_freq = model.rotary_emb.inv_freq.detach().float().clone()
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (D/2,)

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.model.layers)

    def rope(self, position_ids: torch.Tensor, dtype: torch.dtype):
        """cos and sin for the positions: each (B, 1, T, D), float32 math then ``dtype``."""
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :]  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]

    def attention(self, layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  allowed: torch.Tensor, past_key: torch.Tensor | None,
                  past_value: torch.Tensor | None):
        """One self-attention block: output (B, T, hidden), keys and values (B, KV, S, D)."""
        attn = layer.self_attn
        batch, seq = x.shape[0], x.shape[1]
        d = self.head_dim
        q = attn.q_proj(x).view(batch, seq, self.num_heads, d).transpose(1, 2)  # (B, H, T, D)
        k = attn.k_proj(x).view(batch, seq, self.num_kv_heads, d).transpose(1, 2)  # (B, KV, T, D)
        v = attn.v_proj(x).view(batch, seq, self.num_kv_heads, d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_key is not None:
            k = torch.cat((past_key, k), dim=2)  # (B, KV, S, D)
            v = torch.cat((past_value, v), dim=2)
        total = k.shape[2]
        # Grouped-query attention without copying the cache: head h uses kv head h // groups.
        grouped = q.reshape(batch, self.num_kv_heads, self.groups * seq, d)
        scores = torch.matmul(grouped, k.transpose(2, 3)) * self.scaling  # (B, KV, G*T, S)
        scores = scores.view(batch, self.num_kv_heads, self.groups, seq, total)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        probs = probs.view(batch, self.num_kv_heads, self.groups * seq, total)
        out = torch.matmul(probs, v)  # (B, KV, G*T, D)
        out = out.view(batch, self.num_heads, seq, d).transpose(1, 2)
        out = out.reshape(batch, seq, self.num_heads * d)
        return attn.o_proj(out), k, v

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor, past: list[torch.Tensor] | None = None):
        """Hidden states before the final norm (B, T, hidden) and the presents.

        ``past`` is ``[key_0, value_0, key_1, ...]`` with shapes (B, KV, P, D), or
        None for no cache; presents come back in the same order, (B, KV, P + T, D).
        """
        x = self.model.embed_tokens(input_ids)  # (B, T, hidden)
        cos, sin = self.rope(position_ids, x.dtype)
        allowed = allowed_keys(attention_mask, input_ids.shape[1])
        presents: list[torch.Tensor] = []
        for index, layer in enumerate(self.model.layers):
            past_key = past[2 * index] if past is not None else None
            past_value = past[2 * index + 1] if past is not None else None
            h, key, value = self.attention(
                layer, rms_norm(layer.input_layernorm, x), cos, sin, allowed, past_key, past_value
            )
            presents += [key, value]
            x = x + h
            mlp = layer.mlp
            h = rms_norm(layer.post_attention_layernorm, x)
            x = x + mlp.down_proj(nn.functional.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        return x, presents


class TokenClassifierGraph(nn.Module):
    """Segmenter graph: (input_ids, attention_mask) -> logits (B, T, L); right padding."""

    def __init__(self, base: nn.Module, head: nn.Module):
        super().__init__()
        self.core = Qwen2Core(base)  # the HF Qwen2Model
        self.head = head  # score: (B, T, hidden) -> (B, T, L)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits for every position; positions are the running count of real tokens - 1."""
        position_ids = (torch.cumsum(attention_mask, dim=-1) - 1).clamp(min=0)
        hidden, _ = self.core(input_ids, attention_mask, position_ids)
        return self.head(rms_norm(self.core.model.norm, hidden))


class EncoderTokenClassifierGraph(nn.Module):
    """Segmenter graph of a bidirectional encoder with a token-classification head:
    (input_ids, attention_mask) -> logits (B, T, L); right padding, one segment."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # e.g. BertForTokenClassification (token types default to 0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits for every position (padded positions are masked out of attention)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class EncoderSequenceClassifierGraph(nn.Module):
    """Classifier graph of a bidirectional encoder with a sequence-classification head:
    (input_ids, attention_mask, token_type_ids) -> logits (B, L); right padding, one text
    pair (problem with the group marked, group) per row."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # e.g. BertForSequenceClassification (pooled first token)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        """Logits per row (padded positions are masked out of attention)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits


class SpanGroupClassifierGraph(nn.Module):
    """Classifier graph of an encoder reading each problem once:
    (input_ids, attention_mask, group_tokens (B, G, T) 0/1) -> logits (B, G, L); right
    padding; an all-zero group slot reads as a span-free group."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # BertForSpanGroupClassification (mycelium.modeling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                group_tokens: torch.Tensor) -> torch.Tensor:
        """Logits per group slot."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          group_tokens=group_tokens).logits


class LastPositionDecoderGraph(nn.Module):
    """Classifier/extractor graph: KV cache in and out, head on the last position only.

    With ``share_tied`` and a head tied to the input embeddings, the logits are
    computed as ``(E @ h^T)^T`` so that the graph holds the (V, hidden) matrix once
    (``h @ E^T`` would make the exporter store a transposed copy). int8 exports
    keep the copy: onnxruntime quantizes only MatMuls whose second input is a weight.
    """

    def __init__(self, base: nn.Module, head: nn.Module, share_tied: bool = True):
        super().__init__()
        self.core = Qwen2Core(base)  # the HF Qwen2Model
        self.head = head  # score (B, L) or lm_head (B, V)
        tied = head.weight is base.embed_tokens.weight and getattr(head, "bias", None) is None
        self.share_tied = share_tied and tied

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor, *past: torch.Tensor):
        """``(logits, present.0.key, present.0.value, ...)``; callers left-pad new tokens."""
        hidden, presents = self.core(input_ids, attention_mask, position_ids, list(past))
        last = rms_norm(self.core.model.norm, hidden[:, -1])  # (B, hidden)
        if self.share_tied:
            logits = torch.matmul(self.head.weight, last.transpose(0, 1)).transpose(0, 1)
        else:
            logits = self.head(last)
        return (logits, *presents)
