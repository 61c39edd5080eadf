"""Write a random-weight Mycelium checkpoint (docs/ARCHITECTURE.md, checkpoint contract).

    python -m benchmarks.make_checkpoint --shape tiny|qwen2.5-0.5b -o DIR [--seed N]
    python -m benchmarks.make_checkpoint --like ARTIFACTS -o DIR [--weights random] [--seed N]

The three specialists are built by the trainer's constructors (``mycelium.train.models``)
with random weights (``torch.manual_seed``) in the chosen shape, and share the trainer's
byte-level BPE recipe (``mycelium.train.tokenizer``) trained in-process on synthetic
sentences (no download). Used by the exporter's tests and by the benchmarks of the real
model size.

``--like ARTIFACTS`` (:func:`checkpoint_like`) instead mirrors an artifacts folder whose
checkpoint is not at hand (the embedded default ships only ONNX): every model gets the
architecture and shapes its ONNX graph holds, the graph's own weights (int8 ones
dequantized, ``benchmarks.artifact_weights``; ``--weights random``: random ones, the
same shapes only), and the artifacts' own tokenizers, labels and mycelium.json, so
``benchmarks.torch_runners.load_torch_solver`` accepts it for those artifacts and runs
the same models as the runtime. The checkpoint says which weights in ``LIKE_STAMP``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import random
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mycelium.runtime.spec import OPERATIONS, SEGMENTER_LABELS, SPECIAL_TOKENS, SolverSpec


@dataclass(frozen=True)
class Shape:
    """Model dimensions of one checkpoint shape."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int | None  # None: the tokenizer's size
    max_position_embeddings: int
    rope_theta: float
    tokenizer_vocab: int  # target size of the trained BPE


SHAPES = {
    "tiny": Shape(64, 2, 4, 2, 128, None, 1024, 10000.0, 512),
    "qwen2.5-0.5b": Shape(896, 24, 14, 2, 4864, 151936, 32768, 1000000.0, 512),
}

_NAMES = ("Tom", "Ann", "Lee", "Maria", "Sam", "Priya", "John", "Chen", "Olga", "Ben", "Zoe",
          "Carlos", "Fatima", "Kenji", "Nadia", "Peter", "Ruth", "Omar", "Grace", "Ivan")
_ITEMS = ("apples", "pens", "books", "cookies", "marbles", "dollars", "miles", "boxes", "eggs",
          "tickets", "stickers", "pencils", "oranges", "cards", "shirts", "candles", "minutes",
          "hours", "pages", "bottles", "flowers", "students", "cupcakes", "stamps", "toys")
_VERBS = ("has", "buys", "sells", "gives away", "finds", "loses", "eats", "makes", "collects",
          "reads", "bakes", "plants", "earns", "spends", "shares", "packs", "counts", "orders")
_PLACES = ("store", "school", "farm", "market", "library", "garden", "bakery", "park", "office")


def synthetic_corpus(count: int = 400, seed: int = 0) -> list[str]:
    """Simple word-problem sentences with digits, and the group serialisations."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        name, item, verb = rng.choice(_NAMES), rng.choice(_ITEMS), rng.choice(_VERBS)
        place, other = rng.choice(_PLACES), rng.choice(_NAMES)
        a, b = rng.randint(0, 999), rng.randint(1, 99)
        lines.append(f"{name} {verb} {a} {item} at the {place}. Then {other} {verb} {b} more.")
        lines.append(f"How many {item} does {name} have after {b} days? {a / b:.2f} each.")
        lines.append(f"Each {item[:-1]} costs ${b}. {name} pays {a} cents for {b} {item}.")
        lines.append(f" Q0={a} {item} Q1={b} {item} {rng.choice(OPERATIONS)} R1 C{b}")
    return lines


def train_tokenizer(vocab_size: int, seed: int = 0):
    """The trainer's byte-level BPE (``mycelium.train.tokenizer``: mycelium.json's special
    tokens, the argument and operation tokens) trained on the synthetic corpus."""
    from mycelium.train.tokenizer import train_tokenizer as train_bpe

    return train_bpe(synthetic_corpus(seed=seed), vocab_size)


def make_checkpoint(shape: str, out: Path, seed: int = 0) -> Path:
    """Write a random checkpoint of the named shape into ``out``; returns ``out``."""
    import torch

    from mycelium.train.models import (
        BackboneSize,
        TokenIds,
        build_classifier,
        build_extractor,
        build_segmenter,
    )

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} (choose from {', '.join(SHAPES)})")
    dims = SHAPES[shape]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(dims.tokenizer_vocab, seed=seed)
    size = BackboneSize(dims.hidden_size, dims.num_hidden_layers, dims.num_attention_heads,
                        dims.num_key_value_heads, dims.intermediate_size,
                        dims.max_position_embeddings)
    tokens = TokenIds(tokenizer.token_to_id(SPECIAL_TOKENS["pad"]),
                      tokenizer.token_to_id(SPECIAL_TOKENS["eos"]),
                      dims.vocab_size or tokenizer.get_vocab_size(with_added_tokens=True))
    builders = (
        ("segmenter", lambda: build_segmenter(size, tokens, SEGMENTER_LABELS,
                                              rope_theta=dims.rope_theta)),
        ("classifier", lambda: build_classifier(size, tokens, OPERATIONS,
                                                rope_theta=dims.rope_theta)),
        ("extractor", lambda: build_extractor(size, tokens, rope_theta=dims.rope_theta)),
    )
    for offset, (name, build) in enumerate(builders):
        torch.manual_seed(seed + offset)
        model = build().eval()
        folder = out / name
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save(str(folder / "tokenizer.json"))
        del model
        gc.collect()  # one model in memory at a time (2 GB each at 0.5B, fp32)
    spec = SolverSpec().to_dict()
    (out / "mycelium.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return out


# --- a checkpoint like an artifacts folder ------------------------------------------------

ROLE_NAMES = ("segmenter", "classifier", "extractor")
WEIGHTS = {  # checkpoint_like's weights= choices, as LIKE_STAMP's "weights" describes them
    "artifacts": "the artifacts' own, int8 ones dequantized "
                 "(benchmarks.artifact_weights.fill_from_graph)",
    "random": "random, the artifacts' shapes only (benchmarks.make_checkpoint.checkpoint_like)",
}
BERT_HEAD_DIM = 64  # BERT's convention (base, large), used only when the graph hides it
QWEN2_HEAD_DIM = 64  # Qwen2's convention (0.5B..72B), when neither graph nor manifest says
QWEN2_POSITIONS = 512  # the trainer's BackboneSize default (RoPE: no weights depend on it)


@dataclass(frozen=True)
class GraphShape:
    """The architecture and shapes one ONNX graph of an artifacts folder holds."""

    architecture: str  # the manifest's: "qwen2" or "bert"
    vocab_size: int  # rows of the token embedding
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    heads_from: str  # "graph" (its attention Reshape constants) or the convention taken
    max_position_embeddings: int | None = None  # bert: rows of its learned positions
    type_vocab_size: int | None = None  # bert: rows of its token-type embedding
    layer_norm_eps: float | None = None  # bert: the graph's LayerNormalization epsilon
    rope_theta: float | None = None  # qwen2: from the graph's inverse frequencies
    tie_word_embeddings: bool | None = None  # qwen2 extractor


def _constants(graph: Any) -> dict[str, Any]:
    """Values of the graph's Constant nodes and its small integer initializers."""
    from onnx import TensorProto, numpy_helper

    values: dict[str, Any] = {}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    for init in graph.initializer:
        if init.data_type == TensorProto.INT64 and len(init.dims) <= 1:
            values[init.name] = numpy_helper.to_array(init)
    return values


def _head_splits(graph: Any, constants: dict[str, Any]) -> Counter:
    """(heads, head_dim) pairs of the attention Reshapes: a shape built by a Concat whose
    last two parts are constants, ``(..., heads, head_dim)``, as eager attention traces
    its ``view(*input_shape, -1, head_dim)`` / ``view(B, T, heads, head_dim)``."""
    made = {out: node for node in graph.node for out in node.output}
    splits: Counter = Counter()
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        concat = made.get(node.input[1])
        if concat is None or concat.op_type != "Concat" or len(concat.input) < 2:
            continue
        parts = [constants.get(name) for name in concat.input[-2:]]
        if all(part is not None and part.size == 1 and part.dtype.kind == "i" for part in parts):
            heads, dim = (int(part.reshape(-1)[0]) for part in parts)
            if heads > 0 and dim > 0:
                splits[(heads, dim)] += 1
    return splits


def _matmul_weights(graph: Any) -> list[tuple[int, int, bool]]:
    """(K, N, quantized) of every MatMul against a weight: fp32/fp16 MatMul and int8
    MatMulInteger hold B as (K, N) (torch's Linear weight transposed), MatMulNBits says
    K and N in its attributes."""
    dims = {init.name: tuple(init.dims) for init in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type in ("MatMul", "MatMulInteger") and len(node.input) > 1:
            shape = dims.get(node.input[1])
            if shape is not None and len(shape) == 2:
                found.append((shape[0], shape[1], node.op_type != "MatMul"))
        elif node.op_type == "MatMulNBits":
            attrs = {attr.name: attr.i for attr in node.attribute}
            found.append((attrs["K"], attrs["N"], True))
    return found


def _inverse_frequencies(constants: dict[str, Any], half: int) -> Any:
    """RoPE's inverse frequencies (``half`` of them, 1.0 first, decreasing), which the
    trace stores as a constant."""
    for value in constants.values():
        flat = value.reshape(-1)
        if (value.dtype.kind == "f" and flat.size == half and half > 1
                and abs(float(flat[0]) - 1.0) < 1e-6 and float(flat[1]) < 1.0
                and all(flat[i] > flat[i + 1] for i in range(half - 1))):
            return flat
    return None


def _named(shapes: dict[str, tuple[int, ...]], pattern: str) -> tuple[int, ...] | None:
    """The shape of the first initializer whose name matches ``pattern``."""
    for name, shape in shapes.items():
        if re.search(pattern, name):
            return shape
    return None


def _most_common(values: list[int]) -> int | None:
    return Counter(values).most_common(1)[0][0] if values else None


def graph_shape(path: Path, spec: Any) -> GraphShape:
    """The shapes of one exported model, read from its ONNX graph (weights not loaded) and
    its manifest entry ``spec`` (``mycelium.runtime.manifest.ModelSpec``).

    - The token embedding keeps its Hugging Face module path (``...embed_tokens.weight``,
      ``...word_embeddings.weight``; int8 adds ``_quantized``): vocabulary and hidden size;
      so do a BERT's position and token-type tables.
    - Layers: one attention Softmax per layer. Named per-layer initializers are not
      counted: the exporter merges identical tensors (an untrained model's zero biases and
      unit norms), keeping one name for all of them.
    - MLP width: MatMul weights are (K, N), the transpose of torch's (out, in), and every
      layer's down projection is (width, hidden): a BERT's intermediate bias, else the
      most frequent K of the (K, hidden) weights with K != hidden (a head's once-only
      weights lose the count), else hidden.
    - Heads are not in the weights: the attention Reshape constants ``(..., heads,
      head_dim)`` whose product is the hidden size give the query heads; keys and values
      are split with the same head_dim over the key projection's width (its bias, else
      the most frequent (hidden, N < hidden) weight). Where no Reshape says, head_dim is
      the manifest's KV cache's, else the architecture's convention (64); ``heads_from``
      says which. A cached model's layers and KV heads must equal the manifest's.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name.removesuffix("_quantized"): tuple(init.dims)
              for init in graph.initializer}
    constants = _constants(graph)
    splits = _head_splits(graph, constants)
    matmuls = _matmul_weights(graph)
    arch = spec.architecture
    if arch not in ("qwen2", "bert"):
        raise ValueError(f"{path.name}: architecture {arch!r} is not supported (qwen2, bert)")
    pattern = (r"(^|\.)embed_tokens\.weight$" if arch == "qwen2"
               else r"embeddings\.word_embeddings\.weight$")
    embedding = _named(shapes, pattern)
    if embedding is None or len(embedding) != 2:
        raise ValueError(f"{path.name}: no token embedding ({pattern}) among its initializers")
    vocab, hidden = embedding
    layers = sum(node.op_type == "Softmax" for node in graph.node)
    indices = {int(m.group(1)) for name in shapes
               if (m := re.search(r"(?:^|\.)(?:layers|layer)\.(\d+)\.", name))}
    if not layers or max(indices, default=-1) >= layers:
        raise ValueError(f"{path.name}: {layers} attention Softmax nodes but layer indices "
                         f"up to {max(indices, default=-1)}")
    bias = _named(shapes, r"encoder\.layer\.\d+\.intermediate\.dense\.bias$")
    intermediate = (bias[0] if bias else None) or _most_common(
        [k for k, n, _ in matmuls if n == hidden and k != hidden]) or hidden
    query = max(((count, pair) for pair, count in splits.items()
                 if pair[0] * pair[1] == hidden), default=None)
    kv = spec.kv_cache
    if query is not None:
        (heads, head_dim), heads_from = query[1], "graph"
    elif kv is not None:
        head_dim, heads_from = kv.head_dim, "manifest kv_cache head_dim"
    else:
        head_dim = QWEN2_HEAD_DIM if arch == "qwen2" else BERT_HEAD_DIM
        heads_from = f"{'Qwen2' if arch == 'qwen2' else 'BERT'} convention head_dim {head_dim}"
    if query is None:
        if hidden % head_dim:
            raise ValueError(f"{path.name}: hidden {hidden} is not a multiple of head_dim "
                             f"{head_dim} ({heads_from})")
        heads = hidden // head_dim
    if arch == "bert":
        positions = _named(shapes, r"embeddings\.position_embeddings\.weight$")
        types = _named(shapes, r"embeddings\.token_type_embeddings\.weight$")
        eps = Counter(attr.f for node in graph.node if node.op_type == "LayerNormalization"
                      for attr in node.attribute if attr.name == "epsilon")
        return GraphShape(
            arch, vocab, hidden, layers, intermediate, heads, heads, head_dim, heads_from,
            max_position_embeddings=positions[0] if positions else 512,
            type_vocab_size=types[0] if types else 2,
            layer_norm_eps=float(f"{eps.most_common(1)[0][0]:.6g}") if eps else 1e-12,
        )
    key = _named(shapes, r"(?:^|\.)layers\.\d+\.self_attn\.k_proj\.bias$")
    kv_width = key[0] if key else _most_common(
        [n for k, n, _ in matmuls if k == hidden and n < hidden]) or heads * head_dim
    kv_heads = kv_width // head_dim
    if kv is not None and (kv.num_layers, kv.num_kv_heads, kv.head_dim) != (
            layers, kv_heads, head_dim):
        raise ValueError(
            f"{path.name}: the graph reads as {layers} layers of {kv_heads} KV heads of "
            f"{head_dim}, the manifest's KV cache says {kv.num_layers}, {kv.num_kv_heads}, "
            f"{kv.head_dim}")
    inverse = _inverse_frequencies(constants, head_dim // 2)
    theta = (float(f"{float(inverse[1]) ** (-head_dim / 2):.6g}") if inverse is not None
             else 10000.0)  # the trainer's default
    # a float graph shares a tied output projection with the embedding
    # (LastPositionDecoderGraph(share_tied=True)), so an own (hidden, vocab) weight means
    # untied; int8 always quantizes a copy: the trainer's convention then (tied)
    untied = any((k, n, q) == (hidden, vocab, False) for k, n, q in matmuls)
    return GraphShape(arch, vocab, hidden, layers, intermediate, heads, kv_heads, head_dim,
                      heads_from, rope_theta=theta, tie_word_embeddings=not untied)


def _build_like(name: str, shape: GraphShape, spec: Any, solver: SolverSpec,
                scratch: Path) -> Any:
    """A random model of ``shape`` for role ``name`` from the trainer's constructors: a
    Qwen2 specialist from ``mycelium.train.models.build_*``; an encoder one as training
    starts it, from a (here random) pretrained encoder folder (``encoder_segmenter``,
    ``span_group_classifier``, ``encoder_classifier``)."""
    from mycelium.runtime.manifest import model_kind
    from mycelium.train.models import (
        BackboneSize,
        TokenIds,
        build_classifier,
        build_extractor,
        build_segmenter,
        encoder_classifier,
        encoder_segmenter,
        span_group_classifier,
    )

    labels = tuple(spec.labels or ())
    pad = spec.special_tokens.get("pad")
    if shape.architecture == "qwen2":
        longest = solver.max_problem_tokens + solver.max_suffix_tokens + solver.max_new_tokens
        size = BackboneSize(shape.hidden_size, shape.num_hidden_layers,
                            shape.num_attention_heads, shape.num_key_value_heads,
                            shape.intermediate_size, max(QWEN2_POSITIONS, longest))
        tokens = TokenIds(pad, spec.special_tokens.get("eos"), shape.vocab_size)
        extra = {"head_dim": shape.head_dim, "rope_theta": shape.rope_theta,
                 "tie_word_embeddings": shape.tie_word_embeddings}
        if name == "segmenter":
            return build_segmenter(size, tokens, labels, **extra)
        if name == "classifier":
            return build_classifier(size, tokens, labels, **extra)
        return build_extractor(size, tokens, solver.max_new_tokens, **extra)
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    folder = scratch / f"{name}_encoder"
    config = BertConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        type_vocab_size=shape.type_vocab_size, layer_norm_eps=shape.layer_norm_eps,
        pad_token_id=pad,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # not "newly initialized ... TRAIN this model": known
    try:
        if name == "segmenter":
            return encoder_segmenter(folder, labels)
        if model_kind(name, spec) == "span_group_classifier":
            return span_group_classifier(folder, labels)
        return encoder_classifier(folder, labels)
    finally:
        hf_logging.set_verbosity(verbosity)


def checkpoint_like(artifacts: Path, out: Path, seed: int = 0,
                    weights: str = "artifacts") -> Path:
    """Write into ``out`` a checkpoint of the artifacts folder ``artifacts``: its models'
    architectures and shapes, and with ``weights="artifacts"`` (the default) their
    weights; returns ``out``.

    Each model (segmenter, classifier, extractor) gets its graph's architecture and shapes
    (:func:`graph_shape`), the manifest's labels and special tokens and the artifacts' own
    tokenizer; mycelium.json is the manifest's, so
    ``benchmarks.provenance.check_exported_from`` holds for these artifacts without any
    allowance. Its weights:

    - ``"artifacts"``: the graph's own, int8 ones dequantized
      (:func:`benchmarks.artifact_weights.fill_from_graph`: every parameter mapped to its
      weight by the graph's structure, the filled model checked against onnxruntime on
      sample inputs), so a PyTorch baseline run on it computes the same model as the
      runtime (fp32 activations where an int8 graph quantizes them);
    - ``"random"``: ``torch.manual_seed(seed + i)``, the same shapes only: a baseline run
      on it measures their speed, never their accuracy, and its models neither stop nor
      prune as the trained ones do.

    ``LIKE_STAMP`` records what it mirrors and which weights (``like_stamp`` reads it).
    """
    import torch

    from mycelium.runtime.manifest import MANIFEST_NAME, load_manifest

    from .provenance import LIKE_STAMP

    if weights not in WEIGHTS:
        raise ValueError(f"weights {weights!r}: choose from {', '.join(WEIGHTS)}")
    artifacts, out = Path(artifacts), Path(out)
    manifest = load_manifest(artifacts, verify=False)
    missing = [name for name in ROLE_NAMES if name not in manifest.models]
    if missing:
        raise ValueError(f"{artifacts}: no {', '.join(missing)} (checkpoint_like mirrors "
                         "a segmenter, classifier and extractor)")
    raw = dict(manifest.mycelium)  # answer scorer included: its calibration needs it
    solver = SolverSpec.from_dict(raw)
    out.mkdir(parents=True, exist_ok=True)
    stamp: dict[str, Any] = {
        "like": str(artifacts.resolve()),
        "manifest_sha256": hashlib.sha256((artifacts / MANIFEST_NAME).read_bytes()).hexdigest(),
        "precision": manifest.precision,
        "seed": seed,
        "weights": WEIGHTS[weights],
        "weights_from": weights,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="like_", dir=out) as scratch:
        for offset, name in enumerate(ROLE_NAMES):
            spec = manifest.models[name]
            shape = graph_shape(artifacts / spec.file, spec)
            torch.manual_seed(seed + offset)
            model = _build_like(name, shape, spec, solver, Path(scratch)).eval()
            entry = {key: value for key, value in vars(shape).items() if value is not None}
            if weights == "artifacts":
                from .artifact_weights import fill_from_graph

                filled = fill_from_graph(model, name, shape.architecture,
                                         artifacts / spec.file, spec)
                entry["weights"] = filled.summary()
            folder = out / name
            model.save_pretrained(folder, safe_serialization=True)
            shutil.copyfile(artifacts / spec.tokenizer, folder / "tokenizer.json")
            stamp["models"][name] = entry
            del model
            gc.collect()
    (out / "mycelium.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    (out / LIKE_STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default="tiny", show_default=True,
              help="Model dimensions.")
@click.option("--like", "like", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None,
              help="Artifacts folder to mirror instead of --shape: each model's architecture, "
                   "shapes and weights from its ONNX graph, its tokenizer and labels.")
@click.option("--weights", type=click.Choice(sorted(WEIGHTS)), default="artifacts",
              show_default=True,
              help="With --like: the graphs' own weights (int8 dequantized) or random ones.")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True,
              help="Checkpoint folder to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="torch.manual_seed base.")
def main(shape: str, like: Path | None, weights: str, output: Path, seed: int) -> None:
    """Write a random-weight Mycelium checkpoint of the given shape, or like an artifacts
    folder (--like)."""
    if like is not None:
        checkpoint_like(like, output, seed=seed, weights=weights)
        click.echo(f"wrote a checkpoint like {like} ({weights} weights) to {output}")
        return
    make_checkpoint(shape, output, seed=seed)
    click.echo(f"wrote {shape} checkpoint to {output}")


if __name__ == "__main__":
    main()
