"""Bad weight files for tests: random bytes, cut, empty, a picture, and pickles that would leave a marker file.

Each writer puts one file at `path`. A pickle payload, if anything ever unpickled it without torch's
`weights_only` restriction, would create the marker file (an `open(marker, "w")` call); tests assert the
marker never appears (and `unpickling_runs_code` shows the payload really does that when unpickled)."""
from __future__ import annotations

import io
import os
import pickle
import random

import torch


class _Marker:
    """Unpickled, this object is `open(path, "w")`: code running at load time."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def pickle_payload(marker: str) -> bytes:
    """A plain pickle (as a .ckpt/.bin/.pt often is) of a state dict holding the marker."""
    return pickle.dumps({"state_dict": {"weight": _Marker(marker)}})


def torch_payload(marker: str) -> bytes:
    """torch.save's zip format (what facexlib's .pth files are) of a state dict holding the marker."""
    buf = io.BytesIO()
    torch.save({"weight": _Marker(marker)}, buf)
    return buf.getvalue()


def unpickling_runs_code(marker: str) -> bool:
    """The payloads are real: plain unpickling creates the marker (then it is removed again)."""
    pickle.loads(pickle_payload(marker)).get("state_dict", {}).get("weight").close()
    made = os.path.exists(marker)
    if made:
        os.remove(marker)
    return made


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def random_bytes(path, size: int = 4096, seed: int = 0) -> str:
    return write(path, random.Random(seed).randbytes(size))


def truncated(path, good_file, keep: float = 0.5) -> str:
    """The first `keep` of a good safetensors file: its header intact, its data cut."""
    data = open(good_file, "rb").read()
    header = 8 + int.from_bytes(data[:8], "little")
    cut = max(header + 1, int(len(data) * keep))
    assert cut < len(data), "the file is too small to cut after its header"
    return write(path, data[:cut])


def empty(path) -> str:
    return write(path, b"")


def png(path) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    return write(path, buf.getvalue())
