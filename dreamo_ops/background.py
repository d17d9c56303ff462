"""Built-in background remover for ip references: rembg's model sessions on a local ONNX file, never a download.

rembg (PyPI, optional) knows each model's input size, normalisation and output activation; this module only
tells it which local file to open. Its own model lookup (home folder, download when missing) is bypassed by
overriding the session's `download_models` hook with the given path, so no code path here reaches the network.
The file's stem names the model, as in rembg's own cache: `birefnet-general.onnx`, `u2net.onnx`,
`isnet-general-use.onnx`, `bria-rmbg.onnx`... and `BEN2_Base.onnx`, the remover the official DreamO demo uses.
"""
from __future__ import annotations

import os

import numpy as np

# rembg session names whose predict() returns one foreground mask; remote or multi-mask sessions are left out.
SINGLE_MASK_SESSIONS = (
    "birefnet-general", "birefnet-general-lite", "birefnet-general-fp16", "birefnet-portrait", "birefnet-dis",
    "birefnet-hrsod", "birefnet-cod", "birefnet-massive", "isnet-general-use", "isnet-anime", "u2net",
    "u2netp", "u2net_human_seg", "silueta", "bria-rmbg",
)
# file stems that rembg opens through a "custom" session (a file it does not download itself)
CUSTOM_STEMS = {"BEN2_Base": "ben_custom"}
EXTENSION = ".onnx"
INSTALL_HINT = "pip install rembg onnxruntime (onnxruntime-gpu for CUDA)"
WHERE_TO_GET = ("ONNX files from rembg's releases (e.g. birefnet-general.onnx, u2net.onnx) or BEN2_Base.onnx "
                "(PramaLLC/BEN2, the remover the official DreamO demo uses)")


def session_name(file_name: str) -> str | None:
    """The rembg session that runs this file, or None when the file is not a known single-mask model."""
    stem, ext = os.path.splitext(os.path.basename(file_name))
    if ext.lower() != EXTENSION:
        return None
    if stem in CUSTOM_STEMS:
        return CUSTOM_STEMS[stem]
    return stem if stem in SINGLE_MASK_SESSIONS else None


def rembg_available() -> tuple[bool, str]:
    try:
        import onnxruntime  # noqa: F401
        import rembg.sessions  # noqa: F401
    except ImportError as e:
        return False, f"{e} ({INSTALL_HINT})"
    return True, ""


class BackgroundRemover:
    """A rembg session opened on a local ONNX file; `mask` gives the foreground weight of an RGB image."""

    def __init__(self, path: str, providers: list[str] | None = None):
        name = session_name(path)
        if name is None:
            raise ValueError(f"'{os.path.basename(path)}' is not a background-removal model this pack knows: "
                             f"name it like rembg's files ({', '.join(SINGLE_MASK_SESSIONS[:4])}, ...{EXTENSION}) "
                             f"or BEN2_Base{EXTENSION}.")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"'{path}' does not exist.")
        ok, why = rembg_available()
        if not ok:
            raise ImportError(f"the built-in background remover needs rembg: {why}")
        import onnxruntime as ort
        from rembg.sessions import sessions

        base = sessions[name]
        local_path = os.path.abspath(path)

        class LocalFileSession(base):  # the only change: the model file is ours, never fetched
            @classmethod
            def download_models(cls, *args, **kwargs):
                return local_path

        kwargs = {"model_path": local_path}
        if providers is not None:
            kwargs["providers"] = list(providers)
        self.path = local_path
        self.model = name
        self.session = LocalFileSession(name, ort.SessionOptions(), **kwargs)

    def mask(self, rgb: np.ndarray) -> np.ndarray:
        """Foreground weight (H, W) float32 in [0, 1] of an (H, W, 3) uint8 RGB image."""
        from PIL import Image

        out = self.session.predict(Image.fromarray(np.ascontiguousarray(rgb)))[0]
        m = np.asarray(out.convert("L"), dtype=np.float32) / 255.0
        if m.shape != rgb.shape[:2]:
            raise ValueError(f"the remover returned a {m.shape} mask for a {rgb.shape[:2]} image")
        return m
