"""Stand-in ONNX models with the signatures of det_10g.onnx, 2d106det.onnx and landmark.onnx.

Built with onnx.helper; their outputs are constants the tests choose (plus, where stated, a
term that depends on the input), so the real decoding code in liveportrait_core/face can be
checked against known answers.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 13)]


def _save(graph, path: str) -> str:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _zero_of_input(inp: str, prefix: str, nodes: list, inits: list) -> str:
    """A scalar 0·mean(input) so that every output depends on the graph input."""
    nodes.append(helper.make_node("ReduceMean", [inp], [prefix + "_m"], keepdims=0))
    inits.append(numpy_helper.from_array(np.float32(0), prefix + "_zero"))
    nodes.append(helper.make_node("Mul", [prefix + "_m", prefix + "_zero"], [prefix + "_z"]))
    return prefix + "_z"


def det10g_standin(path: str, faces, size: int = 512) -> str:
    """det_10g-like graph: input 'input.1' [1,3,?,?]; outputs for strides 8,16,32: scores (N,1),
    distances (N,4), keypoint offsets (N,10), in that order (9 outputs).

    faces: list of (stride, anchor_index, score, distances[4] in stride units,
    offsets[10] in stride units); every other anchor scores 0.
    """
    outs = {}
    for s in (8, 16, 32):
        n = (size // s) ** 2 * 2
        outs[s] = [np.zeros((n, 1), np.float32), np.zeros((n, 4), np.float32),
                   np.zeros((n, 10), np.float32)]
    for s, idx, score, dist, offs in faces:
        outs[s][0][idx, 0] = score
        outs[s][1][idx] = dist
        outs[s][2][idx] = offs
    nodes, inits, outputs = [], [], []
    z = _zero_of_input("input.1", "in", nodes, inits)
    for kind in range(3):
        for s in (8, 16, 32):
            arr = outs[s][kind]
            name = f"out_{kind}_{s}"
            inits.append(numpy_helper.from_array(arr, name + "_c"))
            nodes.append(helper.make_node("Add", [name + "_c", z], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])
    return _save(helper.make_graph(nodes, "det_10g_standin", [inp], outputs, inits), path)


def lmk106_standin(path: str, points_norm: np.ndarray, normalises_inside: bool = False) -> str:
    """2d106det-like graph: input 'data' [1,3,192,192] → 'fc1' [1,212] = points_norm (in −1..1).

    normalises_inside: start the graph with nodes named Sub…/Mul… like models that take raw
    pixels (insightface then feeds mean 0 / std 1).
    """
    nodes, inits = [], []
    src = "data"
    if normalises_inside:
        inits += [numpy_helper.from_array(np.float32(127.5), "mean"),
                  numpy_helper.from_array(np.float32(1 / 128), "scale")]
        nodes += [helper.make_node("Sub", ["data", "mean"], ["subbed"], name="Sub_0"),
                  helper.make_node("Mul", ["subbed", "scale"], ["normed"], name="Mul_1")]
        src = "normed"
    z = _zero_of_input(src, "in", nodes, inits)
    inits.append(numpy_helper.from_array(points_norm.reshape(1, 212).astype(np.float32), "pts"))
    nodes.append(helper.make_node("Add", ["pts", z], ["fc1"], name="out_add"))
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])
    return _save(helper.make_graph(nodes, "lmk106_standin", [inp], [out], inits), path)


def landmark203_standin(path: str, raw: np.ndarray, probe: bool = True) -> str:
    """landmark.onnx-like graph: input 'input' [1,3,224,224]; three outputs, the third [1,406].

    Output #2 = raw (crop units); with probe=True its first two values are replaced by the mean
    of input channel 0 and of channel 2, so a test can see what the runner fed in.
    """
    nodes, inits = [], []
    z = _zero_of_input("input", "in", nodes, inits)
    raw = raw.reshape(1, 406).astype(np.float32)
    if probe:
        for c in (0, 2):
            inits += [numpy_helper.from_array(np.array([c], np.int64), f"s{c}"),
                      numpy_helper.from_array(np.array([c + 1], np.int64), f"e{c}"),
                      numpy_helper.from_array(np.array([1], np.int64), f"ax{c}")]
            nodes += [helper.make_node("Slice", ["input", f"s{c}", f"e{c}", f"ax{c}"], [f"ch{c}"]),
                      helper.make_node("ReduceMean", [f"ch{c}"], [f"m{c}"], axes=[1, 2, 3],
                                       keepdims=1)]
        inits += [numpy_helper.from_array(np.array([1, 2], np.int64), "shape12"),
                  numpy_helper.from_array(raw[:, 2:], "rest")]
        nodes += [helper.make_node("Concat", ["m0", "m2"], ["mm"], axis=1),
                  helper.make_node("Reshape", ["mm", "shape12"], ["probe"]),
                  helper.make_node("Concat", ["probe", "rest"], ["pts_pre"], axis=1),
                  helper.make_node("Add", ["pts_pre", z], ["pts"])]
    else:
        inits.append(numpy_helper.from_array(raw, "pts_c"))
        nodes.append(helper.make_node("Add", ["pts_c", z], ["pts"]))
    inits += [numpy_helper.from_array(np.zeros((1, 214), np.float32), "o0"),
              numpy_helper.from_array(np.zeros((1, 1), np.float32), "o1")]
    nodes += [helper.make_node("Add", ["o0", z], ["out0"]), helper.make_node("Add", ["o1", z], ["out1"])]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])
    outs = [helper.make_tensor_value_info("out0", TensorProto.FLOAT, [1, 214]),
            helper.make_tensor_value_info("out1", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("pts", TensorProto.FLOAT, [1, 406])]
    return _save(helper.make_graph(nodes, "landmark_standin", [inp], outs, inits), path)


def yunet_standin(path: str, size: int, faces) -> str:
    """YuNet-like graph for cv2.FaceDetectorYN at a fixed size×size input: input 'input';
    outputs cls/obj (1,N,1), bbox (1,N,4), kps (1,N,10) for strides 8, 16, 32 (1 anchor per
    cell, N = (size/stride)²). faces: (stride, col, row, score, bbox[4], kps[10]) raw values
    (score = cls with obj 1)."""
    vals = {}
    for kind, ch in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
        for s in (8, 16, 32):
            vals[(kind, s)] = np.zeros((1, (size // s) ** 2, ch), np.float32)
    for s, col, row, score, bbox, kps in faces:
        i = row * (size // s) + col
        vals[("cls", s)][0, i, 0], vals[("obj", s)][0, i, 0] = score, 1.0
        vals[("bbox", s)][0, i], vals[("kps", s)][0, i] = bbox, kps
    nodes, inits, outs = [], [], []
    z = _zero_of_input("input", "in", nodes, inits)
    for kind in ("cls", "obj", "bbox", "kps"):
        for s in (8, 16, 32):
            a, name = vals[(kind, s)], f"{kind}_{s}"
            inits.append(numpy_helper.from_array(a, name + "_c"))
            nodes.append(helper.make_node("Add", [name + "_c", z], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.shape)))
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])
    return _save(helper.make_graph(nodes, "yunet_standin", [inp], outs, inits), path)


def astronaut_landmark_standin(path: str) -> str:
    """landmark.onnx stand-in answering the astronaut's 203 points (the example workflows' source
    image), in the runner's crop units; used by the node tests and the integration tests."""
    from conftest import compact_file, parity_file

    src = parity_file("e2e_image_to_video.npz") or compact_file("face_e2e.npz")
    lmk = np.load(src)["source_lmk203"].astype(np.float32)
    center = (lmk.min(0) + lmk.max(0)) / 2
    side = 1.5 * float(np.ptp(lmk, axis=0).max())
    raw = (lmk - center) / side + np.array([0.5, 0.5 - 0.1], np.float32)
    return landmark203_standin(path, raw.reshape(-1), probe=False)
