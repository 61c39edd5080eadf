"""Which runner serves each specialist: a registry from the manifest's model kind
(``manifest.model_kind``) to a runner, and the onnxruntime sessions they run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .batching import MAX_ROWS_PER_CALL
from .classify import GROUP_SLOTS
from .manifest import Manifest, ModelSpec, model_kind, safe_member
from .models import (
    DecoderRunner,
    EncoderClassifierRunner,
    SegmenterRunner,
    SpanGroupClassifierRunner,
)
from .sessions import ShapeLimits, engine_cache_dir, make_session, shape_profiles
from .spec import SolverSpec

ClassifierRunner = DecoderRunner | EncoderClassifierRunner | SpanGroupClassifierRunner
Runners = tuple[SegmenterRunner, ClassifierRunner, DecoderRunner]
WriterRunners = tuple[SegmenterRunner, DecoderRunner]  # a program writer's set

# (session, manifest entry, pad id, cache device) -> runner
RunnerFactory = Callable[[ort.InferenceSession, ModelSpec, int, "str | None"], Any]

RUNNERS: dict[str, RunnerFactory] = {
    "token_classifier": lambda session, spec, pad, device: SegmenterRunner(session, pad),
    "decoder": lambda session, spec, pad, device: DecoderRunner(session, spec, pad, device),
    "pair_classifier":
        lambda session, spec, pad, device: EncoderClassifierRunner(session, pad),
    "span_group_classifier":
        lambda session, spec, pad, device: SpanGroupClassifierRunner(session, pad),
    # the writer's graph is a decoder's (KV cache, last-position logits over its classes)
    "program_writer": lambda session, spec, pad, device: DecoderRunner(session, spec, pad,
                                                                       device),
}


def shape_limits(spec: SolverSpec) -> ShapeLimits:
    """The largest shapes the solver feeds a graph under these settings."""
    return ShapeLimits(
        rows=MAX_ROWS_PER_CALL,
        problem_tokens=spec.max_problem_tokens,
        new_tokens=spec.max_suffix_tokens + spec.max_new_tokens,
        group_slots=GROUP_SLOTS,
    )


def onnx_runners(folder: Path, manifest: Manifest, spec: SolverSpec, provider: str,
                 threads: int | None, pad_ids: Mapping[str, int], device: str | None
                 ) -> Runners | WriterRunners:
    """One onnxruntime session per model of the manifest, each in the runner its kind
    names (TensorRT gets one shape profile per graph), in the order of its set's roles."""
    limits = shape_limits(spec)
    built = {}
    for name, model in manifest.models.items():
        tensorrt = None
        if provider == "tensorrt":
            tensorrt = {**shape_profiles(model, limits),
                        "trt_engine_cache_path": str(engine_cache_dir(model))}
        session = make_session(safe_member(folder, model.file), provider, threads, tensorrt)
        built[name] = RUNNERS[model_kind(name, model)](session, model, pad_ids[name], device)
    if manifest.writes_programs:
        return built["segmenter"], built["writer"]
    return built["segmenter"], built["classifier"], built["extractor"]
