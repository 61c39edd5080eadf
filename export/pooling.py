"""The span-group classifier's max-pooling as a loop over groups (same values, bounded memory).

PyTorch exports ``states.unsqueeze(1).masked_fill(outside, -1e4).amax(dim=2)`` as
``ReduceMax(Where(mask (B,G,T,1), fill, Unsqueeze(states) (B,1,T,H)), axes=[2])``: the
``Where`` materialises a (B, G, T, H) tensor, 200 MB for one call of 2**17 cells at
H = 384, which is most of what a solve held at its peak. :func:`loop_group_max_pool`
replaces the pair by a ``Scan`` over the group axis whose body masks and reduces one
group at a time, (B, T, H) at most. A maximum does not depend on the order it is taken
in, so the logits are bit-identical (``tests/test_pooling.py``; the embedded default's
classifier went through it and still answers as pinned).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCAN_NAME = "/model/GroupMaxPoolScan"


def _constant_ints(graph: Any, name: str) -> list[int] | None:
    """The integer values of a Constant node's output or an initializer, if it is one."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return [int(v) for v in numpy_helper.to_array(init).reshape(-1)]
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]
    return None


def _tensor_dtype(graph: Any, name: str) -> int | None:
    """The element type of a Constant node's output or an initializer, if it is one."""
    for init in graph.initializer:
        if init.name == name:
            return int(init.data_type)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return int(node.attribute[0].t.data_type)
    return None


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def loop_group_max_pool(model: Any) -> int:
    """Rewrite every group max-pool of ``model`` (an ``onnx.ModelProto``, in place) as a
    Scan over the group axis; returns how many were rewritten (0: no such pattern)."""
    from onnx import TensorProto, helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    opset = _opset(model)
    rewritten = 0
    for reduce in [n for n in graph.node if n.op_type == "ReduceMax"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in reduce.attribute}
        axes = list(attrs.get("axes", []))
        if not axes and len(reduce.input) > 1:
            axes = _constant_ints(graph, reduce.input[1]) or []
        where = producer.get(reduce.input[0])
        if (axes != [2] or attrs.get("keepdims", 1) != 0 or where is None
                or where.op_type != "Where" or users.get(where.output[0]) != 1):
            continue
        condition, fill, expanded = where.input
        unsqueeze = producer.get(expanded)
        if unsqueeze is None or unsqueeze.op_type != "Unsqueeze":
            continue
        unsqueeze_axes = (list(helper.get_attribute_value(unsqueeze.attribute[0]))
                          if unsqueeze.attribute else
                          _constant_ints(graph, unsqueeze.input[1]) or [])
        dtype = _tensor_dtype(graph, fill)
        if unsqueeze_axes != [1] or dtype is None:
            continue
        states = unsqueeze.input[0]  # (B, T, H)
        body_nodes = [helper.make_node("Where", ["group_outside", fill, states],
                                       ["group_masked"])]
        if opset >= 18:
            body_nodes.insert(0, helper.make_node(
                "Constant", [], ["group_reduce_axes"],
                value=helper.make_tensor("axes", TensorProto.INT64, [1], [1])))
            body_nodes.append(helper.make_node("ReduceMax", ["group_masked", "group_reduce_axes"],
                                               ["group_peak"], keepdims=0))
        else:
            body_nodes.append(helper.make_node("ReduceMax", ["group_masked"], ["group_peak"],
                                               axes=[1], keepdims=0))
        body = helper.make_graph(
            body_nodes, "group_max_pool",
            [helper.make_tensor_value_info("group_outside", TensorProto.BOOL, None)],
            [helper.make_tensor_value_info("group_peak", dtype, None)],
        )
        scan = helper.make_node(
            "Scan", [condition], [reduce.output[0]], name=f"{SCAN_NAME}_{rewritten}",
            body=body, num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1],
        )
        at = list(graph.node).index(where)
        graph.node.remove(reduce)
        graph.node.remove(where)
        graph.node.insert(at, scan)
        if users.get(expanded) == 1:
            graph.node.remove(unsqueeze)
        rewritten += 1
    return rewritten


def rewrite_file(path: Path) -> int:
    """Apply :func:`loop_group_max_pool` to an ONNX file in place (its external data, if
    any, stays where it is); returns how many pools were rewritten."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    count = loop_group_max_pool(model)
    if count:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return count
