"""DreamORefEncode: one reference image (or a batch) -> DREAMO_REF, with a preview of what was encoded."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dreamo_ops.errors import DreamOError
from ..dreamo_ops.reference import TASKS, DreamOReference, paste_on_white, resize_batch_to_area

DREAMO_REF_TYPE = "DREAMO_REF"
NODE_ID = "DreamORefEncode"


def _foreground(image: torch.Tensor, mask):
    """Foreground weight (B, H, W) from the mask input, else the image's alpha channel, else None."""
    if mask is not None:
        m = mask if mask.ndim == 3 else mask.unsqueeze(0)
        if m.shape[-2:] != image.shape[1:3]:
            m = F.interpolate(m.unsqueeze(1).float(), size=image.shape[1:3], mode="bilinear").squeeze(1)
        reps = -(-image.shape[0] // m.shape[0])
        return m.repeat(reps, 1, 1)[: image.shape[0]], "mask input"
    if image.shape[-1] == 4:
        return image[..., 3], "image alpha"
    return None, None


def prepare_pixels(image: torch.Tensor, task: str, resolution: int, mask=None):
    """Pixels DreamO sees for a reference, plus notes on what was done. Raises DreamOError on bad input."""
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise DreamOError(NODE_ID, "image", f"expected an IMAGE batch (B, H, W, 3), got shape {tuple(image.shape)}.",
                          "connect a LoadImage (or any IMAGE) output.")
    if task not in TASKS:
        raise DreamOError(NODE_ID, "task", f"unknown task '{task}'.", f"choose one of {', '.join(TASKS)}.")
    if task == "id":
        raise DreamOError(
            NODE_ID, "task", "'id' references need face detection, alignment and parsing, which this version of "
            "the pack does not run yet.", "use task 'ip' with a tightly cropped face on a plain background for now; "
            "the face models (facexlib: detection_Resnet50_Final.pth, parsing_bisenet.pth) come with the "
            "reference preprocessing update.")
    if image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    notes = []
    rgb = image[..., :3]
    if task == "ip":
        fg, source = _foreground(image, mask)
        if fg is not None:
            rgb = paste_on_white(rgb, fg)
            notes.append(f"ip: background replaced with white using the {source}")
        else:
            notes.append("ip: no mask or alpha given, so the background was kept (DreamO expects the subject on "
                         "white: connect a background-removal mask to 'mask')")
    try:
        pixels = resize_batch_to_area(rgb, resolution)
    except ValueError as e:
        raise DreamOError(NODE_ID, "resolution", str(e) + ".", "raise 'resolution' or use a larger image.") from e
    notes.append(f"{task}: resized {image.shape[2]}x{image.shape[1]} -> {pixels.shape[2]}x{pixels.shape[1]}")
    return pixels, notes


class DreamORefEncode:
    NODE_ID = NODE_ID
    DISPLAY_NAME = "DreamO Reference Encode"
    CATEGORY = "DreamO"
    FUNCTION = "encode"
    RETURN_TYPES = (DREAMO_REF_TYPE, "IMAGE", "STRING")
    RETURN_NAMES = ("reference", "preview", "info")
    OUTPUT_TOOLTIPS = (
        "The encoded reference, for one of DreamOApply's ref_1…ref_9 sockets.",
        "Exactly the pixels that were VAE-encoded (after background removal and resizing).",
        "What was done to the image, one line per step.",
    )
    DESCRIPTION = ("Prepares a reference picture as DreamO was trained (ip: subject on white; style: as is), "
                   "resizes it by the official rule and VAE-encodes it. A batch of N images gives N references "
                   "used by samples 1..N of the latent batch in turn.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The reference picture."}),
                "vae": ("VAE", {"tooltip": "The Flux VAE (ae.safetensors)."}),
                "task": (list(TASKS), {"default": "ip", "tooltip":
                         "ip: a subject/object/garment (background to white); id: a face identity; "
                         "style: a style picture, used as is (start the prompt with 'generate a same style image.')."}),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 16, "tooltip":
                               "The reference is resized to about resolution² pixels, sides multiples of 16 "
                               "(official default 512; up to 1024 keeps fine detail at a higher cost)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Foreground mask (1 = keep) for ip: the subject is pasted on white. "
                                  "A LoadImage mask is 1 where the picture is transparent: invert it first."}),
            },
        }

    def encode(self, image, vae, task, resolution, mask=None):
        pixels, notes = prepare_pixels(image, task, resolution, mask)
        latent = vae.encode(pixels)
        if latent.ndim != 4:
            raise DreamOError(NODE_ID, "vae", f"this VAE gives {latent.ndim - 2}-D latents, DreamO needs an image "
                              "VAE.", "connect the Flux VAE (ae.safetensors).")
        ref = DreamOReference(latent=latent.cpu(), task=task, pixels=pixels, notes=tuple(notes))
        info = "\n".join(notes)
        return {"ui": {"dreamo_info": [info]}, "result": (ref, pixels, info)}
