"""onnxruntime sessions: provider choice and session options."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from .errors import ArtifactsError, MyceliumError
from .manifest import ModelSpec
from .memory import configure_allocator

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


@dataclass(frozen=True)
class ShapeLimits:
    """The largest shapes the solver feeds a graph (TensorRT builds one profile for them)."""

    rows: int  # batch rows per call
    problem_tokens: int  # a problem's tokens (the prefix)
    new_tokens: int  # tokens fed after the prefix: group suffix plus generated arguments
    opt_rows: int = 16
    opt_tokens: int = 64
    group_slots: int = 64  # span-group slots per row of a span-group classifier
    opt_groups: int = 12


def shape_profiles(model: ModelSpec, limits: ShapeLimits) -> dict[str, str]:
    """TensorRT's explicit min/opt/max shape profiles of one graph, from its manifest entry.

    The manifest's symbolic dims are ``batch``, ``seq`` (fed tokens), ``past_seq`` (cached
    tokens), ``total_seq`` and ``groups`` (span groups per problem); the cache is empty
    (length 0) when a problem is prefilled.
    """
    longest_past = limits.problem_tokens + limits.new_tokens
    # an encoder classifier reads a pair (the problem, then the group and special tokens)
    # or the problem framed by special tokens, with its span groups
    names = {tensor.name for tensor in model.inputs}
    framed = bool(names & {"token_type_ids", "group_tokens"})
    longest_fed = longest_past if framed else limits.problem_tokens
    dims = {
        "min": {"batch": 1, "seq": 1, "past_seq": 0, "total_seq": 1, "groups": 1},
        "opt": {"batch": limits.opt_rows, "seq": 8, "past_seq": limits.opt_tokens,
                "total_seq": limits.opt_tokens + 8, "groups": limits.opt_groups},
        "max": {"batch": limits.rows, "seq": longest_fed, "past_seq": longest_past,
                "total_seq": longest_past + limits.problem_tokens,
                "groups": limits.group_slots},
    }
    out = {}
    for level, table in dims.items():
        parts = []
        for tensor in model.inputs:
            sizes = [str(table[d]) if isinstance(d, str) else str(d) for d in tensor.shape]
            parts.append(f"{tensor.name}:{'x'.join(sizes)}")
        out[f"trt_profile_{level}_shapes"] = ",".join(parts)
    return out


def engine_cache_dir(model: ModelSpec) -> Path:
    """Where TensorRT engines of this graph are cached: $MYCELIUM_TRT_CACHE or
    ~/.cache/mycelium/tensorrt, one folder per graph hash (artifacts may be read-only)."""
    root = os.environ.get("MYCELIUM_TRT_CACHE") or Path.home() / ".cache" / "mycelium" / "tensorrt"
    return Path(root) / model.sha256[:16]


def provider_list(name: str, tensorrt_options: Mapping[str, object] | None = None) -> list:
    """The providers argument for an InferenceSession (with CPU as the fallback)."""
    if name == "tensorrt":
        options = {"trt_engine_cache_enable": True, "trt_timing_cache_enable": True,
                   "trt_fp16_enable": True, **(tensorrt_options or {})}
        return [(PROVIDERS["tensorrt"], options), PROVIDERS["cuda"], PROVIDERS["cpu"]]
    if name == "cuda":
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    return [PROVIDERS["cpu"]]


def cache_device(provider: str, io_binding: bool | None = None) -> str | None:
    """Where decoder caches live between calls: the GPU for CUDA/TensorRT (IO binding),
    numpy arrays on CPU unless ``io_binding`` asks for bound CPU tensors."""
    if provider in ("cuda", "tensorrt"):
        return "cuda" if io_binding is not False else None
    return "cpu" if io_binding else None


MEMORY_MODES = ("lean", "fast")


def memory_mode() -> str:
    """``$MYCELIUM_MEMORY``: ``lean`` (default: no onnxruntime arena, large tensors
    returned to the system at once; peak RSS flat at about 3x the artifacts + 150 MB) or
    ``fast`` (onnxruntime's arena and memory patterns: faster, several times the memory)."""
    mode = os.environ.get("MYCELIUM_MEMORY", "lean").strip().lower() or "lean"
    if mode not in MEMORY_MODES:
        raise MyceliumError(f"MYCELIUM_MEMORY={mode!r} is not one of {', '.join(MEMORY_MODES)}")
    return mode


def make_session(
    path: Path,
    provider: str,
    threads: int | None = None,
    tensorrt_options: Mapping[str, object] | None = None,
) -> ort.InferenceSession:
    """An InferenceSession for one graph, with graph optimisations on, in the memory mode
    ``$MYCELIUM_MEMORY`` names (``memory_mode``)."""
    lean = memory_mode() == "lean"
    if lean:
        configure_allocator()  # before onnxruntime allocates: see runtime/memory.py
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # idle worker threads sleep instead of spinning: no measurable cost on an idle machine,
    # +30-55 % throughput when another process shares the cores (benchmarks/RESULTS.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # no CPU arena and no memory patterns: the solver feeds a new shape almost every call
    # (rows x tokens x groups), and the arena kept the high-water mark of every shape it
    # saw (power-of-two growth, never returned) while a pattern is cached per shape;
    # plain allocations go back to the system after each call, at no measured speed cost
    # (benchmarks/RESULTS.md, "Memory")
    # ("fast" keeps onnxruntime's arena and patterns: about 1.6x the problems/s for about
    # 1.8x the peak memory, benchmarks/RESULTS.md)
    options.enable_cpu_mem_arena = not lean
    options.enable_mem_pattern = not lean
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=provider_list(provider, tensorrt_options)
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactsError(f"artifacts: cannot load {path.name}: {first}") from None
