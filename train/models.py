"""The three specialists' Qwen2 configurations and constructors.

All three share one backbone configuration (so a backbone could be shared or
pretrained once): only their heads differ.

- segmenter: ``Qwen2ForTokenClassification`` with labels O / B-QTY / I-QTY;
- classifier: ``Qwen2ForSequenceClassification`` over ``SolverSpec.operations``;
- extractor: ``Qwen2ForCausalLM`` writing ``mycelium-args-v1`` arguments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
)

MAX_EXPORT_BYTES = 64 * 1024 * 1024  # the three fp32 models together


@dataclass(frozen=True)
class BackboneSize:
    """Shape of the Qwen2 backbone shared by the three specialists."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.hidden_size // self.num_attention_heads


SIZES: dict[str, BackboneSize] = {
    "tiny": BackboneSize(32, 1, 2, 1, 64),
    "small": BackboneSize(256, 4, 4, 2, 688),
}


@dataclass(frozen=True)
class TokenIds:
    """Ids of the special tokens the models are configured with."""

    pad: int
    eos: int
    vocab_size: int


def backbone_config(size: BackboneSize | str, tokens: TokenIds, **extra: object) -> Qwen2Config:
    """A Qwen2 config of the given size (fp32, tied embeddings, no sliding window);
    ``extra`` adds settings (the heads' labels) or overrides these (e.g. ``rope_theta``)."""
    if isinstance(size, str):
        size = SIZES[size]
    settings: dict[str, object] = {
        "vocab_size": tokens.vocab_size,
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": size.num_hidden_layers,
        "num_attention_heads": size.num_attention_heads,
        "num_key_value_heads": size.num_key_value_heads,
        "head_dim": size.head_dim,
        "max_position_embeddings": size.max_position_embeddings,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "pad_token_id": tokens.pad,
        "eos_token_id": tokens.eos,
        "bos_token_id": None,
        "torch_dtype": "float32",
    }
    return Qwen2Config(**{**settings, **extra})


def build_segmenter(size: BackboneSize | str, tokens: TokenIds,
                    labels: tuple[str, ...], **extra: object) -> Qwen2ForTokenClassification:
    """C1: BIO token classifier (``extra``: as :func:`backbone_config`)."""
    config = backbone_config(
        size, tokens, **extra,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    return Qwen2ForTokenClassification(config)


def build_classifier(size: BackboneSize | str, tokens: TokenIds,
                     operations: tuple[str, ...], **extra: object
                     ) -> Qwen2ForSequenceClassification:
    """C2: operation classifier read at the last real token (pad_token_id set;
    ``extra``: as :func:`backbone_config`)."""
    config = backbone_config(
        size, tokens, **extra,
        num_labels=len(operations),
        id2label=dict(enumerate(operations)),
        label2id={name: i for i, name in enumerate(operations)},
        problem_type="single_label_classification",
    )
    return Qwen2ForSequenceClassification(config)


def build_extractor(size: BackboneSize | str, tokens: TokenIds,
                    max_new_tokens: int = 12, **extra: object) -> Qwen2ForCausalLM:
    """C3: causal LM writing the arguments then ``<eos>`` (``extra``: as
    :func:`backbone_config`)."""
    model = Qwen2ForCausalLM(backbone_config(size, tokens, **extra))
    model.generation_config = GenerationConfig(
        eos_token_id=tokens.eos, pad_token_id=tokens.pad, max_new_tokens=max_new_tokens,
        do_sample=False,
    )
    return model


def from_encoder(cls: type, folder: Path, labels: tuple[str, ...]) -> PreTrainedModel:
    """``cls`` (a classification model class) from a pretrained encoder folder: its
    weights, a head over ``labels`` (kept when the folder already holds that head)."""
    return cls.from_pretrained(
        folder,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        use_safetensors=True,
    )


def encoder_segmenter(folder: Path, labels: tuple[str, ...]) -> PreTrainedModel:
    """C1 started from a pretrained encoder (e.g. all-MiniLM-L6-v2): its weights, a new
    token-classification head over ``labels``."""
    from transformers import AutoModelForTokenClassification

    return from_encoder(AutoModelForTokenClassification, folder, labels)


def encoder_classifier(folder: Path, labels: tuple[str, ...], layers: int = 0) -> PreTrainedModel:
    """C2 started from a pretrained encoder: its weights, a sequence-classification head
    over ``labels`` (the operations, and the reject label when learned; kept when the
    folder is already such a classifier). ``layers``: keep only the first N encoder
    layers (a cheaper classifier, one pass per group at serve time); 0 keeps all."""
    from transformers import AutoModelForSequenceClassification

    model = from_encoder(AutoModelForSequenceClassification, folder, labels)
    if layers:
        stack = model.base_model.encoder.layer
        if not 0 < layers <= len(stack):
            raise ValueError(f"classifier layers {layers}: the encoder has {len(stack)}")
        model.base_model.encoder.layer = stack[:layers]
        model.config.num_hidden_layers = layers
    return model


def span_group_classifier(folder: Path, labels: tuple[str, ...]) -> PreTrainedModel:
    """C2 read once per problem (``BertForSpanGroupClassification``) started from a
    pretrained encoder folder: its encoder weights, a fresh head over ``labels`` (kept when
    the folder is already such a classifier)."""
    from mycelium.modeling.span_group import BertForSpanGroupClassification

    return from_encoder(BertForSpanGroupClassification, folder, labels)


def build_pretrain_lm(size: BackboneSize | str, tokens: TokenIds) -> Qwen2ForCausalLM:
    """A plain causal LM of the shared backbone shape (for optional pretraining)."""
    return Qwen2ForCausalLM(backbone_config(size, tokens))


def add_dropout(model: PreTrainedModel, p: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Residual dropout while training: on the token embeddings and on every attention and
    MLP output (forward hooks, inactive in eval mode; remove them with ``handle.remove()``).
    Qwen2 itself has attention-probability dropout only."""
    import torch.nn.functional as F

    def plain(module: torch.nn.Module, _: object, output: torch.Tensor) -> torch.Tensor:
        return F.dropout(output, p, module.training)

    def first(module: torch.nn.Module, _: object, output: tuple) -> tuple:
        return (F.dropout(output[0], p, module.training), *output[1:])

    backbone = model.model
    handles = [backbone.embed_tokens.register_forward_hook(plain)]
    for layer in backbone.layers:
        handles.append(layer.self_attn.register_forward_hook(first))
        handles.append(layer.mlp.register_forward_hook(plain))
    return handles


def load_backbone(model: PreTrainedModel, backbone: dict[str, torch.Tensor]) -> None:
    """Copy a pretrained backbone (``Qwen2Model`` state dict) into a specialist."""
    missing, unexpected = model.model.load_state_dict(backbone, strict=False)
    if unexpected or missing:
        raise ValueError(f"backbone mismatch: missing={missing} unexpected={unexpected}")
    if isinstance(model, Qwen2ForCausalLM):
        model.tie_weights()


def parameter_count(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


def export_bytes(models: list[torch.nn.Module]) -> int:
    """Approximate fp32 size of the exported models together (params * 4 bytes)."""
    return sum(parameter_count(m) * 4 for m in models)


def size_summary(size: BackboneSize | str) -> dict[str, int]:
    """JSON-ready description of a backbone size."""
    if isinstance(size, str):
        size = SIZES[size]
    return {**asdict(size), "head_dim": size.head_dim}
