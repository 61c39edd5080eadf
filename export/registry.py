"""Roles of the three specialists and the registry of exportable architectures.

A role says what a checkpoint sub-folder must hold (which head, labels or not)
and which graph it becomes. An architecture, registered with
:func:`register_architecture` under its config ``model_type``, says which
Hugging Face class loads each role it serves, how to check its config, how to
build the torch module that is traced, and which ops int8 quantizes. Adding an
architecture is one decorated function; nothing else branches on the model type.

Decoders (``qwen2``) serve every role. An encoder (``bert``: a pretrained English
encoder fine-tuned as a specialist) serves the segmenter and the classifier as
full-sequence graphs. The classifier then reads one text pair per group
(``BertForSequenceClassification``) or each problem once, every group pooled from its
spans' tokens (``BertForSpanGroupClassification``, mycelium.modeling). A role may accept
several classes; config.json's ``architectures`` names the one it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mycelium.modeling import SPAN_GROUP_CLASS

from .wrappers import (
    EncoderSequenceClassifierGraph,
    EncoderTokenClassifierGraph,
    LastPositionDecoderGraph,
    SpanGroupClassifierGraph,
    TokenClassifierGraph,
)


@dataclass(frozen=True)
class Role:
    """One of the three specialists."""

    name: str  # sub-folder and artifact stem
    head: str  # architecture suffix in config.json, e.g. "ForTokenClassification"
    needs_labels: bool  # a classification head with an id2label map
    decoder: bool  # a decoder serves it as a KV-cache graph with last-position logits
    generates: bool = False  # writes tokens: only a decoder can serve it


ROLES: dict[str, Role] = {
    "segmenter": Role("segmenter", "ForTokenClassification", needs_labels=True, decoder=False),
    "classifier": Role("classifier", "ForSequenceClassification", needs_labels=True, decoder=True),
    "extractor": Role("extractor", "ForCausalLM", needs_labels=False, decoder=True,
                      generates=True),
}


@dataclass(frozen=True)
class Architecture:
    """How to load, check and wrap one ``model_type`` for every role."""

    model_type: str
    classes: dict[str, tuple[Callable[[], type], ...]]  # role -> model classes (lazy imports)
    build_graph: Callable[..., nn.Module]  # (role, HF model, quantized=bool) -> traced module
    check_config: Callable[[dict[str, Any]], list[str]]  # raw config.json -> problems
    kv_layout: Callable[[Any], tuple[int, int, int]] | None  # decoders: (layers, kv heads, dim)
    int8_ops: tuple[str, ...] = ("MatMul",)  # op types int8 export quantizes
    int8_per_channel: bool = False  # one scale per output channel instead of per tensor

    def cached(self, role: str) -> bool:
        """Whether this architecture serves ``role`` as a KV-cache graph (a decoder role
        on a decoder); other roles are served as full-sequence graphs."""
        return self.kv_layout is not None and ROLES[role].decoder

    def class_names(self, role: str) -> tuple[str, ...]:
        """The ``architectures`` entries config.json may declare for a role."""
        return tuple(load().__name__ for load in self.classes[role])

    def model_class(self, role: str, name: str) -> type:
        """The class of a role named ``name`` (one of ``class_names(role)``)."""
        for load in self.classes[role]:
            cls = load()
            if cls.__name__ == name:
                return cls
        raise KeyError(f"{self.model_type} {role}: no class {name!r}")


ARCHITECTURES: dict[str, Architecture] = {}


Classes = Callable[[], type] | tuple[Callable[[], type], ...]


def register_architecture(model_type: str, classes: dict[str, Classes],
                          check_config: Callable[[dict[str, Any]], list[str]],
                          kv_layout: Callable[[Any], tuple[int, int, int]] | None = None,
                          int8_ops: tuple[str, ...] = ("MatMul",),
                          int8_per_channel: bool = False):
    """Decorator registering a graph builder ``(role, hf_model, quantized) -> nn.Module``;
    ``classes`` names the roles the architecture serves, each with its class or classes
    (a generating role needs ``kv_layout``: only a decoder with a KV cache writes
    tokens)."""

    def decorate(build_graph: Callable[..., nn.Module]):
        unknown = set(classes) - set(ROLES)
        if unknown:
            raise ValueError(f"architecture {model_type!r}: unknown roles {sorted(unknown)}")
        if kv_layout is None and any(ROLES[role].generates for role in classes):
            raise ValueError(f"architecture {model_type!r} serves a generating role: "
                             "needs kv_layout")
        loaders = {role: c if isinstance(c, tuple) else (c,) for role, c in classes.items()}
        ARCHITECTURES[model_type] = Architecture(
            model_type, loaders, build_graph, check_config, kv_layout, int8_ops,
            int8_per_channel,
        )
        return build_graph

    return decorate


def supported() -> str:
    """Registered model types, for error messages."""
    return ", ".join(sorted(ARCHITECTURES))


def _hf_class(name: str) -> Callable[[], type]:
    def load() -> type:
        import transformers

        return getattr(transformers, name)

    return load


def _span_group_class() -> type:
    from mycelium.modeling.span_group import BertForSpanGroupClassification

    return BertForSpanGroupClassification


def _check_qwen2(config: dict[str, Any]) -> list[str]:
    problems = []
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {config.get('hidden_act')!r} is not supported (silu)")
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else scaling
    if kind not in (None, "default"):
        problems.append(f"rope_scaling {scaling!r} is not supported (default RoPE only)")
    if config.get("use_sliding_window"):
        problems.append("use_sliding_window is not supported")
    return problems


def _qwen2_kv_layout(config: Any) -> tuple[int, int, int]:
    head_dim = getattr(config, "head_dim", None) or (
        config.hidden_size // config.num_attention_heads
    )
    return config.num_hidden_layers, config.num_key_value_heads, head_dim


_QWEN2_HEADS = {"segmenter": "score", "classifier": "score", "extractor": "lm_head"}


@register_architecture(
    "qwen2",
    classes={
        "segmenter": _hf_class("Qwen2ForTokenClassification"),
        "classifier": _hf_class("Qwen2ForSequenceClassification"),
        "extractor": _hf_class("Qwen2ForCausalLM"),
    },
    check_config=_check_qwen2,
    kv_layout=_qwen2_kv_layout,
)
def _qwen2_graph(role: str, model: nn.Module, quantized: bool = False) -> nn.Module:
    head = getattr(model, _QWEN2_HEADS[role])
    if ROLES[role].decoder:
        return LastPositionDecoderGraph(model.model, head, share_tied=not quantized)
    return TokenClassifierGraph(model.model, head)


def _check_bert(config: dict[str, Any]) -> list[str]:
    problems = []
    if config.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type {config.get('position_embedding_type')!r} "
                        "is not supported (absolute)")
    if config.get("is_decoder"):
        problems.append("is_decoder is not supported (an encoder is served without a KV cache)")
    return problems


# An encoder's word embeddings are quantized too (a pretrained encoder's embedding table
# is most of its size), with one scale per output channel (per-tensor scales moved more
# of the segmenter's span decisions, train/README.md).
@register_architecture(
    "bert",
    classes={"segmenter": _hf_class("BertForTokenClassification"),
             "classifier": (_hf_class("BertForSequenceClassification"), _span_group_class)},
    check_config=_check_bert,
    int8_ops=("MatMul", "Gather"),
    int8_per_channel=True,
)
def _bert_graph(role: str, model: nn.Module, quantized: bool = False) -> nn.Module:
    if role == "classifier" and type(model).__name__ == SPAN_GROUP_CLASS:
        return SpanGroupClassifierGraph(model)
    if role == "classifier":
        return EncoderSequenceClassifierGraph(model)
    return EncoderTokenClassifierGraph(model)
