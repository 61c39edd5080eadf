"""Provider plumbing that CI can check without a GPU: TensorRT profiles, cache placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.runtime.manifest import load_manifest
from mycelium.runtime.sessions import (
    ShapeLimits,
    cache_device,
    choose_provider,
    engine_cache_dir,
    provider_list,
    shape_profiles,
)

DEFAULT = Path(__file__).resolve().parents[1] / "runtime" / "default_artifacts"


def _parse(profile: str) -> dict[str, list[int]]:
    out = {}
    for item in profile.split(","):
        name, dims = item.split(":")
        out[name] = [int(d) for d in dims.split("x")]
    return out


def test_shape_profiles_cover_every_input_from_prefill_to_longest_decode() -> None:
    manifest = load_manifest(DEFAULT, verify=False)
    extractor = manifest.models["extractor"]
    limits = ShapeLimits(rows=256, problem_tokens=256, new_tokens=76)
    profiles = shape_profiles(extractor, limits)
    low = _parse(profiles["trt_profile_min_shapes"])
    opt = _parse(profiles["trt_profile_opt_shapes"])
    high = _parse(profiles["trt_profile_max_shapes"])
    names = {tensor.name for tensor in extractor.inputs}
    assert set(low) == set(opt) == set(high) == names
    kv = extractor.kv_cache
    assert low["past_key_values.0.key"] == [1, kv.num_kv_heads, 0, kv.head_dim]  # prefill
    assert high["past_key_values.0.key"] == [256, kv.num_kv_heads, 332, kv.head_dim]
    assert high["attention_mask"] == [256, 332 + 256]  # past + fed tokens
    for name in names:
        assert all(a <= b <= c for a, b, c in zip(low[name], opt[name], high[name], strict=True))
    segmenter = _parse(shape_profiles(manifest.models["segmenter"], limits)[
        "trt_profile_max_shapes"])
    assert segmenter == {"input_ids": [256, 256], "attention_mask": [256, 256]}


def test_tensorrt_options_keep_engine_cache_and_fall_back() -> None:
    manifest = load_manifest(DEFAULT, verify=False)
    options = {"trt_engine_cache_path": str(engine_cache_dir(manifest.models["classifier"]))}
    providers = provider_list("tensorrt", options)
    name, merged = providers[0]
    assert name == "TensorrtExecutionProvider"
    assert merged["trt_engine_cache_enable"] and merged["trt_engine_cache_path"].endswith(
        manifest.models["classifier"].sha256[:16])
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_list("cpu") == ["CPUExecutionProvider"]


def test_engine_cache_dir_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MYCELIUM_TRT_CACHE", str(tmp_path))
    model = load_manifest(DEFAULT, verify=False).models["extractor"]
    assert engine_cache_dir(model) == tmp_path / model.sha256[:16]


def test_cache_device_binds_on_gpus_only_by_default() -> None:
    assert cache_device("cuda") == "cuda" and cache_device("tensorrt") == "cuda"
    assert cache_device("cuda", io_binding=False) is None
    assert cache_device("cpu") is None and cache_device("cpu", io_binding=True) == "cpu"


def test_unavailable_provider_is_one_clear_error() -> None:
    from mycelium.runtime.errors import MyceliumError

    with pytest.raises(MyceliumError, match="'rocm'"):
        choose_provider("rocm")
    assert choose_provider("auto") in ("tensorrt", "cuda", "cpu")


def test_sessions_allocate_per_call_without_an_arena_or_memory_patterns() -> None:
    """The solver feeds a new shape almost every call: an arena kept each shape's
    high-water mark and a memory pattern is cached per shape (1.9 GB on 10k problems)."""
    from mycelium.runtime.sessions import make_session

    session = make_session(DEFAULT / "segmenter.onnx", "cpu", threads=1)
    options = session.get_session_options()
    assert options.enable_cpu_mem_arena is False
    assert options.enable_mem_pattern is False
    assert options.intra_op_num_threads == 1


def test_the_fast_memory_mode_keeps_the_arena(monkeypatch) -> None:
    from mycelium.runtime.errors import MyceliumError
    from mycelium.runtime.sessions import make_session

    monkeypatch.setenv("MYCELIUM_MEMORY", "fast")
    options = make_session(DEFAULT / "segmenter.onnx", "cpu", threads=1).get_session_options()
    assert options.enable_cpu_mem_arena is True and options.enable_mem_pattern is True
    monkeypatch.setenv("MYCELIUM_MEMORY", "lean")
    options = make_session(DEFAULT / "segmenter.onnx", "cpu", threads=1).get_session_options()
    assert options.enable_cpu_mem_arena is False
    monkeypatch.setenv("MYCELIUM_MEMORY", "huge")
    with pytest.raises(MyceliumError, match="MYCELIUM_MEMORY='huge'"):
        make_session(DEFAULT / "segmenter.onnx", "cpu")
