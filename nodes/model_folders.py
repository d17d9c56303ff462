"""ComfyUI model folders used by the pack, registered without losing `extra_model_paths.yaml` entries."""
from __future__ import annotations

import os

import folder_paths

from ..dreamo_ops import stages
from ..dreamo_ops.errors import DreamOError

SAFETENSORS = {".safetensors", ".sft"}
DREAMO_FOLDER = "dreamo"
FACEXLIB_FOLDER = "facexlib"  # face detection/parsing weights (DreamOPreprocessorLoader)
REMBG_FOLDER = "rembg"  # ONNX background removers (DreamOPreprocessorLoader)
WEIGHT_FOLDERS = stages.WEIGHT_FOLDERS  # folders a DreamO weights file may sit in, searched in this order


def register_folder(name: str, extensions: set[str]) -> None:
    folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
    paths, exts = folder_paths.folder_names_and_paths[name]
    folder_paths.folder_names_and_paths[name] = (paths, set(exts) | extensions)


def register_all() -> None:
    register_folder(DREAMO_FOLDER, SAFETENSORS)
    register_folder(FACEXLIB_FOLDER, {".pth", ".safetensors"})
    register_folder(REMBG_FOLDER, {".onnx"})


def weight_file_names() -> list[str]:
    """Safetensors files of every weight folder, each name once (the first folder wins)."""
    names: list[str] = []
    for folder in WEIGHT_FOLDERS:
        for name in folder_paths.get_filename_list(folder):
            if os.path.splitext(name)[1].lower() in SAFETENSORS and name not in names:
                names.append(name)
    return names


def resolve_weight_file(node: str, input_name: str, name: str) -> str:
    for folder in WEIGHT_FOLDERS:
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    searched = []
    for folder in WEIGHT_FOLDERS:
        searched += folder_paths.get_folder_paths(folder)
    raise DreamOError(node, input_name, f"'{name}' was not found.",
                      f"put the file in one of {searched} (or list its folder in extra_model_paths.yaml under "
                      f"'{DREAMO_FOLDER}') and refresh the page.")
