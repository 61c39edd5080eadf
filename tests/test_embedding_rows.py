"""Embedding tables to int8 rows: the rewritten graph gathers the same rows, each value
within half its row's quantization step, and leaves small tables and shared ones alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mycelium.export.embedding_rows import quantize_embedding_tables, quantize_rows


def _graph(table: np.ndarray, small: np.ndarray) -> onnx.ModelProto:
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed"),
             helper.make_node("Gather", ["small", "ids_small"], ["picked"], name="lookup"),
             helper.make_node("Relu", ["rows"], ["out"])]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"]),
         helper.make_tensor_value_info("ids_small", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "T", table.shape[1]]),
         helper.make_tensor_value_info("picked", TensorProto.FLOAT, ["N", small.shape[1]])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(small, "small")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def test_a_vocabulary_table_becomes_int8_rows_with_the_same_lookups() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(2048, 16)).astype(np.float32)
    table[5] = 0.0  # a zero row keeps a finite scale
    small = rng.normal(size=(10, 4)).astype(np.float32)
    model = _graph(table, small)
    feed = {"ids": rng.integers(0, 2048, size=(3, 7)).astype(np.int64),
            "ids_small": np.array([1, 9], dtype=np.int64)}
    feed["ids"][0, 0] = 5
    before = _run(model, feed)
    assert quantize_embedding_tables(model) == ["table"]
    onnx.checker.check_model(model)
    kinds = {init.name: init.data_type for init in model.graph.initializer}
    assert kinds == {"table.int8_rows": TensorProto.INT8, "table.row_scales": TensorProto.FLOAT,
                     "small": TensorProto.FLOAT}
    after = _run(model, feed)
    step = np.abs(table).max(axis=1) / 127.0
    bound = np.maximum(step[feed["ids"]], 1e-12)[..., None] / 2 + 1e-7
    assert np.all(np.abs(after[0] - before[0]) <= bound)
    assert np.all(after[0][0, 0] == 0.0)
    np.testing.assert_array_equal(after[1], before[1])  # the small table is untouched


def test_a_table_another_node_reads_is_kept() -> None:
    table = np.ones((2048, 4), dtype=np.float32)
    model = _graph(table, np.ones((3, 2), dtype=np.float32))
    model.graph.node.append(helper.make_node("Identity", ["table"], ["copy"]))
    assert quantize_embedding_tables(model) == []


def test_rows_round_trip_within_half_a_step() -> None:
    table = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], dtype=np.float32)
    rows, scales = quantize_rows(table)
    assert rows.dtype == np.int8 and rows[0, 1] == -127 and scales[1, 0] == 1.0
    assert np.all(np.abs(rows * scales - table) <= scales / 2)
