"""Roles of the three specialists and the registry of exportable architectures.

A role says what a checkpoint sub-folder must hold (which head, labels or not)
and which graph it becomes. An architecture, registered with
:func:`register_architecture` under its config ``model_type``, says which
Hugging Face class loads each role, how to check its config, and how to build
the torch module that is traced. Adding an architecture is one decorated
function; nothing else branches on the model type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .wrappers import LastPositionDecoderGraph, TokenClassifierGraph


@dataclass(frozen=True)
class Role:
    """One of the three specialists."""

    name: str  # sub-folder and artifact stem
    head: str  # architecture suffix in config.json, e.g. "ForTokenClassification"
    needs_labels: bool  # a classification head with an id2label map
    decoder: bool  # KV-cache graph with last-position logits


ROLES: dict[str, Role] = {
    "segmenter": Role("segmenter", "ForTokenClassification", needs_labels=True, decoder=False),
    "classifier": Role("classifier", "ForSequenceClassification", needs_labels=True, decoder=True),
    "extractor": Role("extractor", "ForCausalLM", needs_labels=False, decoder=True),
}


@dataclass(frozen=True)
class Architecture:
    """How to load, check and wrap one ``model_type`` for every role."""

    model_type: str
    classes: dict[str, Callable[[], type]]  # role -> HF model class (imported lazily)
    build_graph: Callable[..., nn.Module]  # (role, HF model, quantized=bool) -> traced module
    check_config: Callable[[dict[str, Any]], list[str]]  # raw config.json -> problems
    kv_layout: Callable[[Any], tuple[int, int, int]]  # HF config -> (layers, kv heads, head dim)

    def class_name(self, role: str) -> str:
        """The ``architectures`` entry expected in config.json for a role."""
        return self.classes[role]().__name__


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(model_type: str, classes: dict[str, Callable[[], type]],
                          check_config: Callable[[dict[str, Any]], list[str]],
                          kv_layout: Callable[[Any], tuple[int, int, int]]):
    """Decorator registering a graph builder ``(role, hf_model, quantized) -> nn.Module``."""

    def decorate(build_graph: Callable[..., nn.Module]):
        missing = set(ROLES) - set(classes)
        if missing:
            raise ValueError(f"architecture {model_type!r} lacks roles {sorted(missing)}")
        ARCHITECTURES[model_type] = Architecture(
            model_type, classes, build_graph, check_config, kv_layout
        )
        return build_graph

    return decorate


def supported() -> str:
    """Registered model types, for error messages."""
    return ", ".join(sorted(ARCHITECTURES))


def _qwen2_class(name: str) -> Callable[[], type]:
    def load() -> type:
        import transformers

        return getattr(transformers, name)

    return load


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
        "segmenter": _qwen2_class("Qwen2ForTokenClassification"),
        "classifier": _qwen2_class("Qwen2ForSequenceClassification"),
        "extractor": _qwen2_class("Qwen2ForCausalLM"),
    },
    check_config=_check_qwen2,
    kv_layout=_qwen2_kv_layout,
)
def _qwen2_graph(role: str, model: nn.Module, quantized: bool = False) -> nn.Module:
    head = getattr(model, _QWEN2_HEADS[role])
    if ROLES[role].decoder:
        return LastPositionDecoderGraph(model.model, head, share_tied=not quantized)
    return TokenClassifierGraph(model.model, head)
