"""The PyTorch-eager baseline: the same pipeline, its models run by transformers.

The runners below replace the onnxruntime ones through ``Solver(..., runners=...)``,
so tokenization, search, executor and scorer are shared and only the model calls
differ. Weights come from the checkpoint folder the artifacts were exported from.
Benchmark-only: the serving runtime never imports this module (nor torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    DynamicCache,
    PreTrainedModel,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

from mycelium.export.checkpoint import validate_checkpoint
from mycelium.runtime.manifest import (
    Manifest,
    ModelSpec,
    load_manifest,
    model_kind,
    safe_member,
)
from mycelium.runtime.models import (
    DecoderRunner,
    DecoderState,
    EncoderClassifierRunner,
    SegmenterRunner,
    SpanGroupClassifierRunner,
    extend,
    log_softmax,
)
from mycelium.runtime.runners import ClassifierRunner
from mycelium.runtime.sessions import choose_provider
from mycelium.runtime.solver import Solver
from mycelium.runtime.tokenization import (
    EncodedPair,
    GroupedProblem,
    group_feed,
    pad_batch,
    pair_feed,
)

from .provenance import check_exported_from


class TorchSegmenterRunner(SegmenterRunner):
    """C1 on PyTorch eager: a token classifier over right-padded problems."""

    def __init__(self, model: PreTrainedModel, pad_id: int):
        self.model = model
        self.pad_id = pad_id

    def label_probs(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Label probabilities (T, L) per token of each sequence (padding dropped)."""
        ids, mask = pad_batch(sequences, self.pad_id, left=False)
        with torch.inference_mode():
            logits = self.model(
                input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
            ).logits
        probs = np.exp(log_softmax(logits.float().numpy()))
        return [probs[row, : len(seq)] for row, seq in enumerate(sequences)]


class TorchEncoderClassifierRunner(EncoderClassifierRunner):
    """C2 as an encoder on PyTorch eager: one right-padded text pair per row."""

    def __init__(self, model: PreTrainedModel, pad_id: int):
        self.model = model
        self.pad_id = pad_id

    def logits(self, rows: list[EncodedPair]) -> np.ndarray:
        """Label logits (B, L) of the encoded pairs."""
        feed = pair_feed(rows, self.pad_id)
        with torch.inference_mode():
            logits = self.model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits
        return logits.float().numpy()


class TorchSpanGroupClassifierRunner(SpanGroupClassifierRunner):
    """C2 as an encoder reading each problem once, on PyTorch eager."""

    def __init__(self, model: PreTrainedModel, pad_id: int):
        self.model = model
        self.pad_id = pad_id

    def logits(self, rows: list[GroupedProblem]) -> np.ndarray:
        """Label logits (B, G, L) of each row's group slots."""
        feed = group_feed(rows, self.pad_id)
        with torch.inference_mode():
            logits = self.model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits
        return logits.float().numpy()


class TorchDecoderRunner(DecoderRunner):
    """C2/C3 on PyTorch eager with a KV cache.

    ``DecoderState.past`` holds torch tensors (B, KV, P, D) (its ``take`` gathers rows
    of them as it does of numpy arrays); each call rebuilds a ``DynamicCache`` from
    them and reads the head at the last position (callers left-pad the new tokens).
    """

    def __init__(
        self, model: Qwen2ForSequenceClassification | Qwen2ForCausalLM, spec: ModelSpec,
        pad_id: int,
    ):
        super().__init__(None, spec, pad_id)  # type: ignore[arg-type]  # no onnx session
        self.model = model
        self.causal = isinstance(model, Qwen2ForCausalLM)
        self.torch_dtype = next(model.parameters()).dtype

    def empty_state(self, batch: int) -> DecoderState:
        """A state with no past (prefill)."""
        shape = (batch, self.kv.num_kv_heads, 0, self.kv.head_dim)
        past = [torch.zeros(shape, dtype=self.torch_dtype) for _ in self.past_names]
        return DecoderState(
            np.zeros((batch, 0), dtype=np.int64), np.zeros(batch, dtype=np.int64), past
        )

    def _run(
        self, ids: np.ndarray, state: DecoderState, new_mask: np.ndarray, out: Any = None
    ) -> tuple[np.ndarray, DecoderState]:
        """Feed new tokens (B, T) after the cache; logits (B, N) at the last position
        (``out``, preallocated cache buffers, exists only with IO binding: never here)."""
        mask, positions, next_position = extend(state, new_mask)
        past: list[Any] = state.past
        if state.mask.shape[1]:
            cache = DynamicCache(ddp_cache_data=list(zip(past[0::2], past[1::2], strict=True)))
        else:
            cache = DynamicCache()
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self.causal else {}
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                position_ids=torch.from_numpy(positions),
                past_key_values=cache,
                use_cache=True,
                **kwargs,
            )
        logits = out.logits[:, -1] if self.causal else out.logits  # (B, V) or pooled (B, L)
        presents: list[Any] = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return logits.float().numpy(), DecoderState(mask, next_position, presents)


class _WriterHead(torch.nn.Module):
    """A trained program writer (``train.writer_eval.Writer``: the base, its trained top
    layers and the grammar head, bf16 as its own evaluation runs it) called like a
    sequence classifier: the head's logits (B, classes) at the last position."""

    def __init__(self, writer: Any):
        super().__init__()
        self.model, self.top = writer.model, writer.top

    def forward(self, **inputs: Any) -> Any:
        from types import SimpleNamespace

        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.model.model(**inputs)
            logits = out.last_hidden_state[:, -1] @ self.top.head.T
        return SimpleNamespace(logits=logits, past_key_values=out.past_key_values)


def _torch_writer_solver(run: Path, folder: Path, manifest: Manifest,
                         threads: int | None) -> Solver:
    """A program writer's set with its writer on PyTorch eager from the training ``run``;
    the segmenter stays the set's ONNX graph (a writer's set has no segmenter checkpoint),
    so only the writer's calls differ."""
    from mycelium.runtime.runners import RUNNERS
    from mycelium.runtime.sessions import make_session
    from mycelium.train.writer_eval import Writer

    entry = manifest.models["segmenter"]
    session = make_session(safe_member(folder, entry.file), "cpu", threads)
    segmenter = RUNNERS[model_kind("segmenter", entry)](session, entry,
                                                         entry.special_tokens["pad"], None)
    spec = manifest.models["writer"]
    writer = TorchDecoderRunner(_WriterHead(Writer(run)), spec, spec.special_tokens["pad"])
    return Solver(folder, manifest, choose_provider("cpu"), threads,
                  runners=(segmenter, writer))


def load_torch_solver(
    checkpoint: str | Path,
    artifacts: str | Path,
    *,
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Solver:
    """A Solver whose three models run on PyTorch eager from ``checkpoint``.

    Tokenizers, templates and search settings come from the artifacts' manifest,
    which must have been exported from this checkpoint, or mirrored by it
    (``benchmarks.make_checkpoint.checkpoint_like``: the same shapes and, by default, the
    graphs' own weights dequantized, or random ones, stamped so;
    ``benchmarks.provenance.like_stamp`` tells).
    """
    if threads:
        torch.set_num_threads(threads)
    checkpoint, folder = Path(checkpoint), Path(artifacts)
    manifest = load_manifest(folder, verify=False)
    check_exported_from(checkpoint, manifest)
    if manifest.writes_programs:
        return _torch_writer_solver(checkpoint, folder, manifest, threads)
    roles = validate_checkpoint(checkpoint).models  # the class each config.json declares
    models = {
        name: role.architecture.model_class(name, role.class_name).from_pretrained(
            role.folder, dtype=dtype).eval()
        for name, role in roles.items()
    }
    pad = {name: model.config.pad_token_id for name, model in models.items()}
    spec = manifest.models["classifier"]
    classifier: ClassifierRunner
    kind = model_kind("classifier", spec)
    if kind == "decoder":
        classifier = TorchDecoderRunner(models["classifier"], spec, pad["classifier"])
    elif kind == "span_group_classifier":
        classifier = TorchSpanGroupClassifierRunner(models["classifier"], pad["classifier"])
    else:
        classifier = TorchEncoderClassifierRunner(models["classifier"], pad["classifier"])
    runners = (
        TorchSegmenterRunner(models["segmenter"], pad["segmenter"]),
        classifier,
        TorchDecoderRunner(models["extractor"], manifest.models["extractor"], pad["extractor"]),
    )
    return Solver(folder, manifest, choose_provider("cpu"), threads, runners=runners)
