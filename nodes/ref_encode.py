"""DreamORefEncode: one reference image (or a batch) -> DREAMO_REF, with a preview of what was encoded."""
from __future__ import annotations

import os
import uuid

import numpy as np

import comfy.model_management

from ..dreamo_ops.errors import DreamOError, finite_numbers, in_node
from ..dreamo_ops.reference import ID_FALLBACKS, TASKS, DreamOReference, prepare_pixels, to_uint8
from .sockets import DREAMO_REF_TYPE, PREPROCESSOR_TYPE

NODE_ID = "DreamORefEncode"
PREVIEWS_KEY = "dreamo_previews"  # the `ui` key of the pictures the node shows: what was encoded, then the found faces


def save_temp_images(images: list[np.ndarray], prefix: str = "dreamo_ref") -> list[dict]:
    """Save uint8 RGB images to ComfyUI's temp folder (as PreviewImage does); the `ui` entries that show them on
    the node."""
    import folder_paths
    from PIL import Image

    if not images:
        return []
    out_dir = folder_paths.get_temp_directory()
    prefix = f"{prefix}_{uuid.uuid4().hex[:8]}"
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir, images[0].shape[1],
                                                                           images[0].shape[0])
    entries = []
    for i, img in enumerate(images):
        file = f"{name}_{counter + i:05}_.png"
        Image.fromarray(np.ascontiguousarray(img)).save(os.path.join(folder, file), compress_level=1)
        entries.append({"filename": file, "subfolder": subfolder, "type": "temp"})
    return entries


@finite_numbers
class DreamORefEncode:
    NODE_ID = NODE_ID
    DISPLAY_NAME = "DreamO Reference Encode"
    CATEGORY = "DreamO"
    FUNCTION = "encode"
    # The preview/info shown on the node is UI output: on ComfyUI 0.33+ it only reaches /history (and the page)
    # after a cache hit when the node declares it (0.3.x ignores the flag and always sends it).
    HAS_INTERMEDIATE_OUTPUT = True
    RETURN_TYPES = (DREAMO_REF_TYPE, "IMAGE", "STRING")
    RETURN_NAMES = ("reference", "preview", "info")
    OUTPUT_TOOLTIPS = (
        "The encoded reference, for one of DreamOApply's ref_1…ref_9 sockets.",
        "Exactly the pixels that were VAE-encoded (aligned, parsed and whitened face for id; subject on white for "
        "ip; resized).",
        "What was done to the image, one line per step (also shown on the node).",
    )
    DESCRIPTION = ("Prepares a reference picture as DreamO was trained and VAE-encodes it. id: the face nearest "
                   "the centre is detected, aligned to 512x512 and parsed, everything but the face painted white "
                   "(needs a preprocessor); ip: subject pasted on white (mask input, alpha channel or the "
                   "preprocessor's remover), then resized; style: resized only. The node shows what the model "
                   "will see and, for id, which face was used. A batch of N images gives N references used by "
                   "samples 1..N of the latent batch in turn.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The reference picture."}),
                "vae": ("VAE", {"tooltip": "The Flux VAE (ae.safetensors)."}),
                "task": (list(TASKS), {"default": "ip", "tooltip":
                         "ip: a subject/object/garment (background to white); id: a face identity (needs a "
                         "preprocessor); style: a style picture, used as is (start the prompt with "
                         "'generate a same style image.')."}),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 16, "tooltip":
                               "ip/style references are resized to about resolution² pixels, sides multiples of "
                               "16 (official default 512; up to 1024 keeps fine detail at a higher cost). id "
                               "references are always 512x512."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Foreground mask (1 = keep) for ip: the subject is pasted on white. "
                                  "A LoadImage mask is 1 where the picture is transparent: invert it first."}),
                "preprocessor": (PREPROCESSOR_TYPE, {"tooltip":
                                 "From DreamOPreprocessorLoader: face models (required for id) and an optional "
                                 "background remover used by ip when there is no mask or alpha channel."}),
                "id_fallback": (list(ID_FALLBACKS), {"default": "ip", "tooltip":
                                "What an id reference does when no face is found. ip (official): it is used as "
                                "an ip reference and the info says so; strict: stop with an error."}),
            },
        }

    def encode(self, image, vae, task, resolution, mask=None, preprocessor=None, id_fallback="ip"):
        device = comfy.model_management.get_torch_device() if task == "id" and preprocessor is not None else None
        with in_node(NODE_ID):
            prepared = prepare_pixels(image, task, resolution, mask, preprocessor, id_fallback, device)
        pixels = prepared.pixels
        latent = vae.encode(pixels)
        if latent.ndim != 4:
            raise DreamOError(NODE_ID, "vae", f"this VAE gives {latent.ndim - 2}-D latents, DreamO needs an image "
                              "VAE.", "connect the Flux VAE (ae.safetensors).")
        ref = DreamOReference(latent=latent.cpu(), task=prepared.task, pixels=pixels, notes=tuple(prepared.notes))
        info = "\n".join(prepared.notes)
        # Shown small inside the node (web/feedback.js) and on DreamO Apply / Text Encode, not as ComfyUI's large
        # image preview: a template stays readable after a run. The `preview` output gives the full picture.
        ui = {"dreamo_info": [info], PREVIEWS_KEY: save_temp_images(list(to_uint8(pixels)) + prepared.detections)}
        return {"ui": ui, "result": (ref, pixels, info)}
