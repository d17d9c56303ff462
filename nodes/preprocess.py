"""DreamOPreprocessorLoader: facexlib's face models (id) and an optional background remover (ip), from local files.

Face weights are read from ComfyUI's `models/facexlib` folder, the remover from `models/rembg` (both registered
by `model_folders.register_all`, keeping `extra_model_paths.yaml` entries). Nothing is downloaded unless 'download_missing_weights' is on.
"""
from __future__ import annotations

import comfy.model_management
import folder_paths

from ..dreamo_ops.background import INSTALL_HINT, WHERE_TO_GET, BackgroundRemover, session_name
from ..dreamo_ops.errors import DreamOError, finite_numbers
from ..dreamo_ops.face_preprocess import DETECTORS, DownloadFailedError, FacePreprocessor, MissingWeightsError
from ..dreamo_ops.reference import DreamOPreprocessor
from .model_folders import FACEXLIB_FOLDER, REMBG_FOLDER
from .sockets import PREPROCESSOR_TYPE

NODE_ID = "DreamOPreprocessorLoader"
NONE = "none"


def remover_files() -> list[str]:
    """ONNX files in the rembg folder(s) that name a model the built-in remover can run."""
    return [n for n in folder_paths.get_filename_list(REMBG_FOLDER) if session_name(n) is not None]


PREFERRED_REMOVERS = ("BEN2_Base.onnx", "birefnet-general.onnx", "bria-rmbg.onnx", "isnet-general-use.onnx",
                      "u2net.onnx")


def default_remover(files: list[str]) -> str:
    """The remover used unless the user picks another: the official BEN2 first, else the best one present."""
    for name in PREFERRED_REMOVERS:
        if name in files:
            return name
    return files[0] if files else NONE


def load_face_models(detector: str, allow_download: bool) -> FacePreprocessor:
    folders = folder_paths.get_folder_paths(FACEXLIB_FOLDER)
    try:
        return FacePreprocessor.from_folders(folders, detector, allow_download=allow_download,
                                             offload_device=comfy.model_management.unet_offload_device())
    except MissingWeightsError as e:
        target = e.folders[0] if e.folders else f"models/{FACEXLIB_FOLDER}"
        raise DreamOError(NODE_ID, "face_detector", f"'{e.weight.name}' was not found in {e.folders}.",
                          f"download it from {e.weight.url} (facexlib's release) into {target} (or a folder listed "
                          f"under '{FACEXLIB_FOLDER}' in extra_model_paths.yaml), or switch "
                          "'download_missing_weights' on; then run again.") from e
    except DownloadFailedError as e:
        raise DreamOError(NODE_ID, "download_missing_weights", f"{e} (no network, or the server refused).",
                          f"check the network and run again, or download {e.weight.url} by hand into {e.folder} "
                          "and switch 'download_missing_weights' off.") from e
    except (RuntimeError, ValueError, OSError) as e:  # a corrupt or mismatched file (WeightFileError names it)
        raise DreamOError(NODE_ID, "face_detector", f"the face model files could not be loaded: {e}",
                          f"replace the file in {folders} with facexlib's original (`dreamo-doctor --id` checks "
                          "the files, `dreamo-download --id` fetches missing ones).") from e


def load_remover(name: str) -> BackgroundRemover:
    path = folder_paths.get_full_path(REMBG_FOLDER, name) if name in remover_files() else None
    if path is None:
        raise DreamOError(NODE_ID, "background_remover", f"'{name}' was not found.",
                          f"put it in one of {folder_paths.get_folder_paths(REMBG_FOLDER)} and refresh the page.")
    try:
        return BackgroundRemover(path)
    except ImportError as e:
        raise DreamOError(NODE_ID, "background_remover", "the built-in background remover needs the rembg "
                          "package, which is not installed.", f"{INSTALL_HINT}, then restart ComfyUI; or set "
                          "'background_remover' to none and connect a mask to DreamORefEncode.") from e
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
        raise DreamOError(NODE_ID, "background_remover", f"'{name}' could not be opened: {e}",
                          f"use an unmodified model file ({WHERE_TO_GET}).") from e


@finite_numbers
class DreamOPreprocessorLoader:
    NODE_ID = NODE_ID
    DISPLAY_NAME = "DreamO Preprocessor Loader"
    CATEGORY = "DreamO"
    FUNCTION = "load"
    RETURN_TYPES = (PREPROCESSOR_TYPE,)
    RETURN_NAMES = ("preprocessor",)
    OUTPUT_TOOLTIPS = ("Face detection + alignment + parsing for id references and an optional background remover "
                       "for ip references; connect it to DreamORefEncode's 'preprocessor'.",)
    DESCRIPTION = ("Loads the models DreamO's official reference preprocessing uses, from local files only: "
                   "RetinaFace and BiSeNet from facexlib (models/facexlib: detection_Resnet50_Final.pth or "
                   "detection_mobilenet0.25_Final.pth, and parsing_bisenet.pth) and, optionally, a background "
                   "remover run by rembg (models/rembg: e.g. birefnet-general.onnx, BEN2_Base.onnx). Nothing is "
                   "downloaded unless 'download_missing_weights' is on. The models stay in system memory and move "
                   "to the GPU only while a reference is prepared.")

    @classmethod
    def INPUT_TYPES(cls):
        files = remover_files()
        return {
            "required": {
                "face_detector": (list(DETECTORS) + [NONE], {"default": "retinaface_resnet50", "tooltip":
                                  "Face detector for id references. retinaface_resnet50 is the official one "
                                  "(detection_Resnet50_Final.pth); retinaface_mobile0.25 is lighter and less "
                                  "accurate (detection_mobilenet0.25_Final.pth). Both use the BiSeNet parser "
                                  "(parsing_bisenet.pth). none: no face models (ip/style only)."}),
                "background_remover": ([NONE] + files, {"default": default_remover(files), "tooltip":
                                       "Background remover for ip references without a mask or alpha channel: an "
                                       f"ONNX file in models/{REMBG_FOLDER}, run by rembg ({WHERE_TO_GET}); the "
                                       "default is the first of BEN2_Base, birefnet-general, bria-rmbg, "
                                       "isnet-general-use, u2net found there. none: ip references need a mask "
                                       "input or an alpha channel, else their background is kept (and the node "
                                       "says so)."}),
                "download_missing_weights": ("BOOLEAN", {"default": False, "tooltip":
                                             "Off (default): a missing face model file is an error saying where to "
                                             "get it; nothing is downloaded. On: missing facexlib files are "
                                             "downloaded once from facexlib's GitHub releases into models/facexlib."}),
            },
        }

    def load(self, face_detector, background_remover, download_missing_weights=False):
        # ComfyUI checks a dropdown's widget value, not one linked from an any-type output (switch nodes)
        if face_detector != NONE and face_detector not in DETECTORS:
            raise DreamOError(NODE_ID, "face_detector", f"unknown face detector '{face_detector}'.",
                              f"choose one of {', '.join(list(DETECTORS) + [NONE])}.")
        face = load_face_models(face_detector, bool(download_missing_weights)) if face_detector != NONE else None
        remover = load_remover(background_remover) if background_remover != NONE else None
        return (DreamOPreprocessor(face=face, remover=remover),)
