"""DreamOLoader: DreamO's learned embeddings from a weights file -> DREAMO."""
from __future__ import annotations

from ..dreamo_ops.errors import DreamOError, finite_numbers
from ..dreamo_ops.weights import UnreadableFileError, WeightFileError, read_embeddings
from .model_folders import resolve_weight_file, weight_file_names
from .sockets import DREAMO_TYPE


def load_embeddings(node: str, input_name: str, name: str):
    path = resolve_weight_file(node, input_name, name)
    try:
        return read_embeddings(path)
    except UnreadableFileError as e:
        raise DreamOError(node, input_name, str(e), "re-download dreamo.safetensors (or the ComfyUI "
                          "embedding.safetensors) from ByteDance/DreamO (this copy may be incomplete), or choose "
                          "another file.") from e
    except WeightFileError as e:
        raise DreamOError(node, input_name, str(e), "choose dreamo.safetensors (or the ComfyUI "
                          "embedding.safetensors) from ByteDance/DreamO.") from e


@finite_numbers
class DreamOLoader:
    NODE_ID = "DreamOLoader"
    DISPLAY_NAME = "DreamO Loader"
    CATEGORY = "DreamO"
    FUNCTION = "load"
    RETURN_TYPES = (DREAMO_TYPE,)
    RETURN_NAMES = ("dreamo",)
    OUTPUT_TOOLTIPS = ("DreamO's learned task, index and placeholder embeddings, for DreamOApply.",)
    DESCRIPTION = ("Reads DreamO's learned embeddings from dreamo.safetensors (models/dreamo or models/loras). "
                   "The LoRA weights in the same file are applied by a LoRA loader, not here.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dreamo_file": (weight_file_names(), {
                "tooltip": "dreamo.safetensors from ByteDance/DreamO, or the ComfyUI embedding.safetensors "
                           "(no placeholder vectors). Listed from models/dreamo and models/loras."}),
        }}

    def load(self, dreamo_file):
        return (load_embeddings(self.NODE_ID, "dreamo_file", dreamo_file),)
