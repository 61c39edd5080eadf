"""Graph I/O of the three exported specialists, as data.

One frozen :class:`GraphIO` per model holds the input and output
:class:`~mycelium.runtime.manifest.TensorSpec` s. The exporter derives the ONNX
names and dynamic axes from it, the manifest stores it, and the runtime reads
the names back from the manifest: the names are written in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass

from mycelium.runtime.manifest import ENCODER_CLASSIFIER_INPUTS, SPAN_GROUP_INPUTS, TensorSpec

BATCH, SEQ, PAST, TOTAL = "batch", "seq", "past_seq", "total_seq"  # symbolic dimensions
GROUPS = "groups"  # span-group slots per problem


def past_name(layer: int, part: str) -> str:
    """Name of a KV-cache input: ``past_key_values.{layer}.{key|value}``."""
    return f"past_key_values.{layer}.{part}"


def present_name(layer: int, part: str) -> str:
    """Name of a KV-cache output: ``present.{layer}.{key|value}``."""
    return f"present.{layer}.{part}"


@dataclass(frozen=True)
class GraphIO:
    """Inputs and outputs of one ONNX graph, in graph order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        """Input names in the order the wrapper's forward takes them."""
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names in the order the wrapper's forward returns them."""
        return [spec.name for spec in self.outputs]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{name: {axis: dim_name}}`` for every symbolic dimension (torch.onnx.export)."""
        return {
            spec.name: {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
            for spec in (*self.inputs, *self.outputs)
        }


def segmenter_io(num_labels: int, dtype: str) -> GraphIO:
    """Token classification over a right-padded batch: logits (B, T, L)."""
    return GraphIO(
        inputs=(
            TensorSpec("input_ids", "int64", (BATCH, SEQ)),
            TensorSpec("attention_mask", "int64", (BATCH, SEQ)),
        ),
        outputs=(TensorSpec("logits", dtype, (BATCH, SEQ, num_labels)),),
    )


def encoder_classifier_io(num_labels: int, dtype: str) -> GraphIO:
    """Sequence classification of a right-padded batch of text pairs: logits (B, L)."""
    return GraphIO(
        inputs=tuple(TensorSpec(name, "int64", (BATCH, SEQ))
                     for name in ENCODER_CLASSIFIER_INPUTS),
        outputs=(TensorSpec("logits", dtype, (BATCH, num_labels)),),
    )


def span_group_io(num_labels: int, dtype: str) -> GraphIO:
    """Every span group of a right-padded batch of problems: logits (B, G, L)."""
    ids, mask, members = SPAN_GROUP_INPUTS
    return GraphIO(
        inputs=(
            TensorSpec(ids, "int64", (BATCH, SEQ)),
            TensorSpec(mask, "int64", (BATCH, SEQ)),
            TensorSpec(members, "int64", (BATCH, GROUPS, SEQ)),
        ),
        outputs=(TensorSpec("logits", dtype, (BATCH, GROUPS, num_labels)),),
    )


def decoder_io(num_layers: int, num_kv_heads: int, head_dim: int, width: int,
               dtype: str) -> GraphIO:
    """A decoder with KV cache and last-position logits (B, width)."""
    past = []
    present = []
    for layer in range(num_layers):
        for part in ("key", "value"):
            past.append(TensorSpec(past_name(layer, part), dtype,
                                   (BATCH, num_kv_heads, PAST, head_dim)))
            present.append(TensorSpec(present_name(layer, part), dtype,
                                      (BATCH, num_kv_heads, TOTAL, head_dim)))
    return GraphIO(
        inputs=(
            TensorSpec("input_ids", "int64", (BATCH, SEQ)),
            TensorSpec("attention_mask", "int64", (BATCH, TOTAL)),
            TensorSpec("position_ids", "int64", (BATCH, SEQ)),
            *past,
        ),
        outputs=(TensorSpec("logits", dtype, (BATCH, width)), *present),
    )
