"""The content checks of the files DreamO needs: what a file is (a FLUX model, a T5-XXL, a DreamO LoRA, facexlib's
detector, an ONNX background remover, ...), by name as the catalog's `Need.check` gives it.

Used by dreamo-doctor on every file it finds and by dreamo-download on every file it fetched. A check imports
the packages it needs (torch, safetensors, facexlib) only when it runs; one that is missing here is
CheckUnavailable, and the file is reported as unchecked rather than bad.
"""
from __future__ import annotations

import os
from typing import Optional

from dreamo_ops.background import check_onnx_file, session_name
from dreamo_ops.weights import WeightFileError


class CheckUnavailable(WeightFileError):
    """A content check could not run here: a package it imports is not installed in this Python."""


def _model_files():
    from dreamo_ops import model_files  # torch and safetensors: imported when a file is checked

    return model_files


def _mf(check: str):
    def run(path: str) -> str:
        return getattr(_model_files(), check)(path)
    return run


def _face(network: Optional[str]):
    def check(path: str) -> str:
        from dreamo_ops.face_preprocess import load_model  # imports facexlib (a few seconds) only when needed

        load_model(path, network)
        return ("BiSeNet face parser" if network is None else f"RetinaFace-{network} detector") + \
            ", loads into facexlib (tensors only, no pickled code)"
    return check


def _only(kind: str):
    def check(path: str) -> str:
        found = _model_files().check_text_encoder(path)
        if not found.startswith(kind):
            raise WeightFileError(f"'{os.path.basename(path)}' is {found.split(',')[0]}, not {kind}.")
        return found
    return check


def _rembg(path: str) -> str:
    name = os.path.basename(path)
    if session_name(name) is None:
        raise WeightFileError(f"'{name}' is not a background remover the pack can run (BEN2_Base.onnx, "
                              "birefnet-*.onnx, isnet-*.onnx, u2net*.onnx, bria-rmbg.onnx, silueta.onnx).")
    try:
        model = check_onnx_file(path)
    except ValueError as e:
        raise WeightFileError(str(e)) from e
    return f"ONNX background remover (rembg session '{session_name(name)}'), {model}"


CHECKS = {
    "flux": _mf("check_flux"), "text_encoder": _mf("check_text_encoder"), "t5xxl": _only("T5-XXL"),
    "clip_l": _only("CLIP-L"), "vae": _mf("check_flux_vae"), "lora": _mf("check_lora"),
    "dreamo_main": _mf("check_dreamo_main"), "embeddings": _mf("check_embeddings"),
    "face:resnet50": _face("resnet50"), "face:mobile0.25": _face("mobile0.25"), "face:parser": _face(None),
    "rembg": _rembg,
}


def check_content(check: str, path: str) -> str:
    """The named content check on a file: its description, WeightFileError saying what is wrong, or
    CheckUnavailable when a package the check needs is not installed here."""
    try:
        return CHECKS[check](path)
    except WeightFileError:
        raise
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        raise CheckUnavailable(f"its contents were not checked: the Python package '{missing}' is not installed "
                               "in this Python") from e
