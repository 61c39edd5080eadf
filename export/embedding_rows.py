"""Embedding tables to int8 rows: each large float table read by a ``Gather`` becomes an
int8 table with one symmetric scale per row, dequantized after the gather
(``Gather(int8) -> Cast -> Mul(Gather(scales))``), so only the rows a batch reads are
widened back to float.

Used for the program writer's weight-only int8: onnxruntime's weight-only quantizer
handles a Gather only at 4 bits, and Qwen2.5's 151,936 x 896 embedding is then 545 MB of
the writer's 948 MB. One scale per row bounds each value's error by half that row's step
(max |row| / 254).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_ROWS = 1024  # a Gather over a smaller float table (a lookup, not a vocabulary) is kept


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 rows of a 2-D float table and their scales (rows, 1)."""
    peak = np.abs(table).max(axis=1, keepdims=True)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.rint(table / scales), -127, 127).astype(np.int8), scales


def quantize_embedding_tables(model: onnx.ModelProto, min_rows: int | None = None
                              ) -> list[str]:
    """Rewrite, in place, every axis-0 ``Gather`` whose data is a float32 initializer of at
    least ``min_rows`` (default ``MIN_ROWS``) rows and that no other node reads; returns
    the tables' names."""
    min_rows = MIN_ROWS if min_rows is None else min_rows
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    done: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        init = initializers.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"),
                    0)
        if (init is None or axis != 0 or len(init.dims) != 2 or init.dims[0] < min_rows
                or init.data_type != TensorProto.FLOAT or readers[init.name] != 1):
            nodes.append(node)
            continue
        table, ids, out = init.name, node.input[1], node.output[0]
        rows, scales = quantize_rows(numpy_helper.to_array(init))
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(rows, f"{table}.int8_rows"),
                                  numpy_helper.from_array(scales, f"{table}.row_scales")])
        nodes += [
            helper.make_node("Gather", [f"{table}.int8_rows", ids], [f"{out}.int8"],
                             name=f"{node.name}.int8"),
            helper.make_node("Cast", [f"{out}.int8"], [f"{out}.float"], to=TensorProto.FLOAT,
                             name=f"{node.name}.cast"),
            helper.make_node("Gather", [f"{table}.row_scales", ids], [f"{out}.scale"],
                             name=f"{node.name}.scale"),
            helper.make_node("Mul", [f"{out}.float", f"{out}.scale"], [out],
                             name=f"{node.name}.dequantize"),
        ]
        done.append(table)
    del graph.node[:]
    graph.node.extend(nodes)
    return done
