"""onnxruntime sessions: provider choice and session options."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from .errors import ArtifactsError, MyceliumError

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


def choose_provider(requested: str = "auto") -> str:
    """Map 'auto'|'cpu'|'cuda'|'tensorrt' to an available provider short name."""
    available = set(ort.get_available_providers())
    if requested == "auto":
        for name in AUTO_ORDER:
            if PROVIDERS[name] in available:
                return name
        return "cpu"
    if requested not in PROVIDERS:
        raise MyceliumError(
            f"unknown provider {requested!r} (choose from auto, {', '.join(PROVIDERS)})"
        )
    if PROVIDERS[requested] not in available:
        raise MyceliumError(
            f"provider {requested!r} is not available in this onnxruntime "
            f"(available: {', '.join(sorted(available))})"
        )
    return requested


def provider_list(name: str, cache_dir: Path | None = None) -> list:
    """The providers argument for an InferenceSession (with CPU as the fallback)."""
    if name == "tensorrt":
        options = {"trt_engine_cache_enable": True, "trt_fp16_enable": True}
        if cache_dir is not None:
            options["trt_engine_cache_path"] = str(cache_dir)
        return [(PROVIDERS["tensorrt"], options), PROVIDERS["cuda"], PROVIDERS["cpu"]]
    if name == "cuda":
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    return [PROVIDERS["cpu"]]


def make_session(path: Path, provider: str, threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession for one graph, with graph optimisations on."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=provider_list(provider, path.parent)
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactsError(f"artifacts: cannot load {path.name}: {first}") from None
