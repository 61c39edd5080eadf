"""The span-group max-pool rewritten as a Scan over groups: the same logits, no (B, G, T, H)
tensor (export/pooling.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from mycelium.export.pooling import loop_group_max_pool, rewrite_file  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[1] / "runtime" / "default_artifacts"


def _constant(name: str, dtype: int, dims: list[int], values: list) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name],
                            value=helper.make_tensor(name, dtype, dims, values))


def _pool_graph(opset: int) -> onnx.ModelProto:
    """states (B,T,H), group_tokens (B,G,T) -> the pool exactly as PyTorch exports
    ``states.unsqueeze(1).masked_fill((member == 0).unsqueeze(-1), -1e4).amax(dim=2)``,
    followed by a Relu so the pool's output feeds another node."""
    reduce_max = (
        helper.make_node("ReduceMax", ["masked", "axes2"], ["peak"], keepdims=0)
        if opset >= 18 else
        helper.make_node("ReduceMax", ["masked"], ["peak"], axes=[2], keepdims=0)
    )
    nodes = [
        _constant("zero", TensorProto.INT64, [], [0]),
        _constant("fill", TensorProto.FLOAT, [], [-1e4]),
        _constant("last", TensorProto.INT64, [1], [-1]),
        _constant("one", TensorProto.INT64, [1], [1]),
        _constant("axes2", TensorProto.INT64, [1], [2]),
        helper.make_node("Equal", ["group_tokens", "zero"], ["outside"]),
        helper.make_node("Unsqueeze", ["outside", "last"], ["outside4"]),
        helper.make_node("Unsqueeze", ["states", "one"], ["states4"]),
        helper.make_node("Where", ["outside4", "fill", "states4"], ["masked"]),
        reduce_max,
        helper.make_node("Relu", ["peak"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "pool",
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["B", "T", "H"]),
         helper.make_tensor_value_info("group_tokens", TensorProto.INT64, ["B", "G", "T"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "G", "H"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], feed)[0]


@pytest.mark.parametrize("opset", [17, 18])
def test_the_scan_pool_gives_bit_identical_values(opset: int) -> None:
    rng = np.random.default_rng(opset)
    feed = {"states": rng.standard_normal((3, 7, 5)).astype(np.float32),
            "group_tokens": (rng.random((3, 4, 7)) < 0.4).astype(np.int64)}
    feed["group_tokens"][0, 1] = 0  # an empty group: every position masked
    model = _pool_graph(opset)
    before = _run(model, feed)
    assert loop_group_max_pool(model) == 1
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert "Scan" in ops and "Where" not in ops and "ReduceMax" not in ops
    after = _run(model, feed)
    assert after.shape == (3, 4, 5)
    np.testing.assert_array_equal(after, before)


def test_a_graph_without_the_pool_is_left_alone(tmp_path: Path) -> None:
    model = _pool_graph(17)
    for node in model.graph.node:
        if node.op_type == "ReduceMax":
            node.attribute[0].ints[:] = [1]  # a max over another axis is not the pool
    path = tmp_path / "other.onnx"
    onnx.save(model, str(path))
    assert rewrite_file(path) == 0
    assert onnx.load(str(path)) == model


def test_the_embedded_classifier_pools_one_group_at_a_time() -> None:
    model = onnx.load(str(DEFAULT / "classifier.onnx"), load_external_data=False)
    ops = [node.op_type for node in model.graph.node]
    assert "Scan" in ops and "ReduceMax" not in ops
    assert loop_group_max_pool(model) == 0  # already rewritten
