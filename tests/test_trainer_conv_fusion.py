"""Folding a convolution's bias and ReLU into it: same values, fewer nodes, anything else left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ecg_anomaly.trainer.conv_fusion import fold_conv_bias


def _conv1d_graph(bias: np.ndarray, flatten: tuple[int, ...] = ()) -> onnx.ModelProto:
    """What tf2onnx makes of a Keras Conv1D with a ReLU: Conv → Squeeze → Add(bias) → Relu, twice over;
    with ``flatten`` (a shape), then Keras' channels-last flatten: Transpose → Reshape."""
    rng = np.random.default_rng(0)
    nodes, inits, previous, channels = [], [], "x", 1
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "axes"))
    nodes.append(helper.make_node("Unsqueeze", ["x", "axes"], ["x4"]))
    previous = "x4"
    for i, out_channels in enumerate((4, 5)):
        weights = rng.normal(0, 1, (out_channels, channels, 1, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(weights, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[0, 1, 0, 1]))
        nodes.append(helper.make_node("Squeeze", [f"c{i}", "axes"], [f"s{i}"]))
        b = rng.normal(0, 1, (1, out_channels, 1)).astype(np.float32) if i == 0 else bias
        inits.append(numpy_helper.from_array(b, f"b{i}"))
        nodes.append(helper.make_node("Add", [f"s{i}", f"b{i}"], [f"a{i}"]))
        nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"]))
        if i == 0:
            nodes.append(helper.make_node("Unsqueeze", ["r0", "axes"], ["u0"]))
            previous, channels = "u0", out_channels
    output = helper.make_tensor_value_info("r1", TensorProto.FLOAT, [None, 5, 6])
    if flatten:
        inits.append(numpy_helper.from_array(np.array(flatten, np.int64), "flat"))
        nodes.append(helper.make_node("Transpose", ["r1"], ["t"], perm=[0, 2, 1]))
        nodes.append(helper.make_node("Reshape", ["t", "flat"], ["f"]))
        output = helper.make_tensor_value_info("f", TensorProto.FLOAT, [None] * len(flatten))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 6])
    graph = helper.make_graph(nodes, "conv1d", [x], [output], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray, output: str = "r1") -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([output], {"x": x})[0]


def test_biases_and_relus_move_into_the_convolutions_with_the_same_values() -> None:
    bias = np.random.default_rng(1).normal(0, 1, (1, 5, 1)).astype(np.float32)
    model = _conv1d_graph(bias)
    x = np.random.default_rng(2).normal(0, 1, (3, 1, 6)).astype(np.float32)
    before = _run(model, x)
    folded = fold_conv_bias(onnx.load_from_string(model.SerializeToString()))
    onnx.checker.check_model(folded)
    assert [n.op_type for n in folded.graph.node] == ["Unsqueeze", "Conv", "Relu", "Conv", "Relu", "Squeeze"]
    used = {name for n in folded.graph.node for name in n.input}
    assert len(folded.graph.initializer) == 5  # axes, 2 weights, 2 folded biases: the unfolded ones gone
    assert all(i.name in used for i in folded.graph.initializer)
    np.testing.assert_allclose(_run(folded, x), before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 5, 6), (6,), (5, 1)])  # per position; a rank the fold does not check
def test_a_bias_that_is_not_per_channel_is_left_where_it_is(shape: tuple[int, ...]) -> None:
    bias = np.random.default_rng(3).normal(0, 1, shape).astype(np.float32)
    model = _conv1d_graph(bias)
    x = np.random.default_rng(4).normal(0, 1, (3, 1, 6)).astype(np.float32)
    folded = fold_conv_bias(onnx.load_from_string(model.SerializeToString()))
    onnx.checker.check_model(folded)
    assert [n.op_type for n in folded.graph.node][-4:] == ["Conv", "Squeeze", "Add", "Relu"]
    np.testing.assert_allclose(_run(folded, x), _run(model, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(-1, 30), (0, 30), (0, -1)])
def test_the_flatten_transposes_the_4d_result_with_the_same_values(shape: tuple[int, ...]) -> None:
    """The Squeeze before the channels-last Transpose goes; the Transpose takes the 4-D result."""
    bias = np.random.default_rng(5).normal(0, 1, (1, 5, 1)).astype(np.float32)
    model = _conv1d_graph(bias, flatten=shape)
    x = np.random.default_rng(6).normal(0, 1, (3, 1, 6)).astype(np.float32)
    folded = fold_conv_bias(onnx.load_from_string(model.SerializeToString()))
    onnx.checker.check_model(folded)
    assert [n.op_type for n in folded.graph.node][-4:] == ["Conv", "Relu", "Transpose", "Reshape"]
    assert helper.get_attribute_value(folded.graph.node[-2].attribute[0]) == [0, 2, 3, 1]
    np.testing.assert_array_equal(_run(folded, x, "f"), _run(model, x, "f"))


def test_a_flatten_that_copies_a_dimension_keeps_its_squeeze() -> None:
    """Reshape's 0 copies the input's dimension, which the 4-D transpose would change: left alone."""
    bias = np.random.default_rng(5).normal(0, 1, (1, 5, 1)).astype(np.float32)
    model = _conv1d_graph(bias, flatten=(0, 0, -1))  # [N, 6, 5]
    x = np.random.default_rng(6).normal(0, 1, (3, 1, 6)).astype(np.float32)
    folded = fold_conv_bias(onnx.load_from_string(model.SerializeToString()))
    assert [n.op_type for n in folded.graph.node][-3:] == ["Squeeze", "Transpose", "Reshape"]
    np.testing.assert_array_equal(_run(folded, x, "f"), _run(model, x, "f"))
