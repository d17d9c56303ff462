"""The built-in background remover: rembg's session code on a local ONNX file, with no way to the network."""
import os

import numpy as np
import pytest
import torch

from comfyui_dreamo.dreamo_ops import background as bg
from comfyui_dreamo.dreamo_ops.reference import DreamOPreprocessor, prepare_pixels

from dreamo_testkit.face_fixtures import NoNetwork, image_tensor, write_tiny_remover


def needs_rembg():
    ok, why = bg.rembg_available()
    if not ok:
        pytest.skip(why)


def subject_on_gray(h=120, w=160):
    img = np.full((h, w, 3), 170, np.uint8)
    img[40:80, 60:110] = (20, 10, 5)  # a dark subject
    return img


@pytest.mark.parametrize("name, session", [
    ("birefnet-general.onnx", "birefnet-general"), ("u2net.onnx", "u2net"), ("BEN2_Base.onnx", "ben_custom"),
    ("isnet-general-use.onnx", "isnet-general-use"), ("bria-rmbg.onnx", "bria-rmbg"),
    ("u2net_cloth_seg.onnx", None), ("sam.onnx", None), ("my_model.onnx", None), ("u2net.pth", None),
])
def test_file_names_map_to_rembg_sessions(name, session):
    assert bg.session_name(name) == session


def test_remover_masks_the_subject_from_a_local_file(tmp_path, monkeypatch):
    needs_rembg()
    path = write_tiny_remover(str(tmp_path / "u2net.onnx"))
    with NoNetwork(monkeypatch) as guard:
        remover = bg.BackgroundRemover(path)
        m = remover.mask(subject_on_gray())
    assert guard.attempts == []
    assert m.shape == (120, 160) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    assert m[50:70, 70:100].min() > 0.8 and m[:20].max() < 0.3
    assert remover.model == "u2net" and os.listdir(tmp_path) == ["u2net.onnx"]


def test_ip_uses_the_remover_when_there_is_no_mask_or_alpha(tmp_path, monkeypatch):
    needs_rembg()
    remover = bg.BackgroundRemover(write_tiny_remover(str(tmp_path / "u2net.onnx")))
    img = image_tensor(subject_on_gray(128, 128))
    with NoNetwork(monkeypatch):
        out = prepare_pixels(img, "ip", 128, preprocessor=DreamOPreprocessor(remover=remover))
    assert any("built-in remover (u2net)" in n for n in out.notes)
    px = out.pixels[0]
    assert px[:20].mean() > 0.85  # background near white
    assert px[55:65, 75:95].mean() < 0.15  # subject kept
    # a mask input still wins over the remover
    out = prepare_pixels(img, "ip", 128, mask=torch.ones(1, 128, 128), preprocessor=DreamOPreprocessor(remover=remover))
    assert any("mask input" in n for n in out.notes) and torch.allclose(out.pixels, img, atol=1 / 255)


def test_unknown_or_missing_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a background-removal model"):
        bg.BackgroundRemover(str(tmp_path / "model.onnx"))
    with pytest.raises(FileNotFoundError):
        bg.BackgroundRemover(str(tmp_path / "u2net.onnx"))
    assert os.listdir(tmp_path) == []
