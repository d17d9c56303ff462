"""Built-in background remover for ip references: rembg's model sessions on a local ONNX file, never a download.

rembg (PyPI, optional) knows each model's input size, normalisation and output activation; this module only
tells it which local file to open. Its own model lookup (home folder, download when missing) is bypassed by
overriding the session's `download_models` hook with the given path, so no code path here reaches the network.
The file's stem names the model, as in rembg's own cache: `birefnet-general.onnx`, `u2net.onnx`,
`isnet-general-use.onnx`, `bria-rmbg.onnx`... and `BEN2_Base.onnx`, the remover the official DreamO demo uses.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where pictures are made: `dreamo-doctor` checks the files without it
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


ONNX_MAX_FIELDS = 10_000  # top-level fields of a model file (real ones have a dozen or so)
# ModelProto's top-level fields and their protobuf wire types (0 varint, 2 length-delimited): ir_version 1,
# producer_name 2, producer_version 3, domain 4, model_version 5, doc_string 6, graph 7, opset_import 8,
# metadata_props 14, training_info 20, functions 25, configuration 26.
ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def _varint(f) -> int | None:
    value = shift = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    return None


def check_onnx_file(path: str) -> str:
    """What an .onnx file is, read from its top-level protobuf fields, or ValueError saying what is wrong.

    Walks ModelProto's fields (tag, then a number or a length it seeks over) to the end of the file: a file that
    is not a model (text, a web page, a picture), a truncated one (a field runs past the end) or one without a
    graph is refused. Reads a few bytes per field and seeks over the graph, so it costs the same small memory
    for any file size, and it needs neither onnx nor onnxruntime."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    if not size:
        raise ValueError(f"'{name}' is empty (0 bytes: an interrupted download or copy?).")
    seen: dict[int, int] = {}
    with open(path, "rb") as f:
        head = f.read(16)
        f.seek(0)
        for _ in range(ONNX_MAX_FIELDS):
            if f.tell() == size:
                break
            tag = _varint(f)
            number, wire = (tag >> 3, tag & 7) if tag is not None else (0, -1)
            expected = ONNX_FIELDS.get(number)
            if tag is None or number == 0 or wire not in (0, 1, 2, 5) or expected not in (None, wire):
                text = all(32 <= c < 127 or c in b"\t\r\n" for c in head)
                looks = ("it looks like text (a web page or an error message?)" if text
                         else f"byte {f.tell()} of {size} is no field of a model")
                raise ValueError(f"'{name}' is not an ONNX model: {looks}.")
            if wire == 0:
                value = _varint(f)
                if value is None:
                    raise ValueError(f"'{name}' is cut short at byte {size} (truncated download?).")
                seen.setdefault(number, value)
            else:
                length = {1: 8, 5: 4}.get(wire) or _varint(f)
                if length is None or f.tell() + length > size:
                    raise ValueError(f"'{name}' is cut short: a part at byte {f.tell()} runs past the end of the "
                                     f"{size}-byte file (truncated download?).")
                f.seek(length, os.SEEK_CUR)
                seen.setdefault(number, length)
        else:
            raise ValueError(f"'{name}' has more than {ONNX_MAX_FIELDS} top-level fields: not an ONNX model.")
    if 1 not in seen or 7 not in seen:
        raise ValueError(f"'{name}' is not an ONNX model (no " + ("IR version" if 1 not in seen else "graph") + ").")
    return f"ONNX model (IR version {seen[1]}, graph {seen[7]:,} bytes)"


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
        import numpy as np
        from PIL import Image

        out = self.session.predict(Image.fromarray(np.ascontiguousarray(rgb)))[0]
        m = np.asarray(out.convert("L"), dtype=np.float32) / 255.0
        if m.shape != rgb.shape[:2]:
            raise ValueError(f"the remover returned a {m.shape} mask for a {rgb.shape[:2]} image")
        return m
