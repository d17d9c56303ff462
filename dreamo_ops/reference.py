"""A prepared DreamO reference (the DREAMO_REF value) and the pixel steps that prepare one, per task.

- id: longest side capped at 1024, face detected, aligned to 512x512 and parsed, non-face labels painted white
  (`face_preprocess`); no resize afterwards. No face: an ip reference (official) or an error ("strict").
- ip: foreground from the mask input, else the image's alpha, else the built-in remover (`background`), pasted
  on white; then the official area resize. Without any of these the background is kept, and the notes say so.
- style: used as is, area resize only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .errors import input_error
from .face_preprocess import LONG_SIDE, DETECTION_THRESHOLD, IdCrop, draw_faces
from .resize import area_size, resize_uint8

TASKS = ("ip", "id", "style")
ID_FALLBACKS = ("ip", "strict")


@dataclass(frozen=True)
class DreamOReference:
    latent: torch.Tensor  # (B, C, h, w) raw VAE latent; ComfyUI applies the model's latent scaling itself
    task: str
    pixels: torch.Tensor  # (B, H, W, 3) in [0, 1]: exactly what was encoded
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class DreamOPreprocessor:
    """The DREAMO_PREPROCESSOR value: face models for id, an optional background remover for ip."""
    face: object | None = None  # face_preprocess.FacePreprocessor
    remover: object | None = None  # background.BackgroundRemover

    def describe(self) -> str:
        face = self.face.detector_name + " + BiSeNet" if self.face is not None else "no face models"
        remover = self.remover.model if self.remover is not None else "no background remover"
        return f"{face}; {remover}"


@dataclass
class PreparedPixels:
    pixels: torch.Tensor  # (B, H, W, 3) in [0, 1]: what the VAE will encode
    task: str  # the task the pixels were prepared as ('ip' after an id reference fell back)
    notes: list[str]
    detections: list[np.ndarray] = field(default_factory=list)  # uint8 RGB images with the found faces boxed


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, H, W, C) float [0, 1] -> uint8 array, rounding like an 8-bit image file."""
    return (images.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0


def paste_on_white(images: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """Composite RGB images (B, H, W, 3) over white with a foreground weight (B, H, W) in [0, 1]."""
    a = foreground.clamp(0, 1).unsqueeze(-1).to(images)
    return images[..., :3] * a + (1.0 - a)


def resize_batch_to_area(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Official ip/style resize of every image in a batch (area resolution², sides multiple of 16)."""
    h, w = area_size(images.shape[1], images.shape[2], resolution)
    if h < 16 or w < 16:
        raise ValueError(f"a {images.shape[2]}x{images.shape[1]} image at resolution {resolution} "
                         f"would be resized to {w}x{h}")
    arr = to_uint8(images)
    return to_float(np.stack([resize_uint8(a, (h, w)) for a in arr]))


def foreground_from_inputs(image: torch.Tensor, mask, notes: list[str] | None = None):
    """Foreground weight (B, H, W) from the mask input, else the image's alpha channel, else None.

    A mask of the image's aspect ratio is resized to it (noted); another aspect ratio, a batch that does not
    fit the images, NaNs or an all-zero mask (LoadImage's mask of a picture without transparency) are errors:
    pasting through them would silently whiten the subject."""
    if mask is not None:
        m = mask if mask.ndim == 3 else mask.unsqueeze(0)
        m = m.float().cpu()
        if m.ndim != 3 or m.shape[0] == 0 or min(m.shape[-2:]) == 0:
            raise input_error("mask", f"expected a MASK (B, H, W), got shape {tuple(mask.shape)}.",
                              "connect a mask of the reference picture, or disconnect 'mask'.")
        if not torch.isfinite(m).all():
            raise input_error("mask", "the mask has NaN or infinite values.",
                              "connect a mask with values between 0 and 1.")
        mh, mw = m.shape[-2:]
        ih, iw = image.shape[1:3]
        uniform = bool((m == m.reshape(m.shape[0], -1)[:, :1, None]).all())  # e.g. LoadImage's 64x64 default
        if not uniform and abs(mh / mw - ih / iw) > 0.01 * (ih / iw) + 1.0 / min(mh, mw):
            raise input_error("mask", f"the mask is {mw}x{mh} but the picture is {iw}x{ih} (another aspect "
                              "ratio), so it cannot be laid over the picture.",
                              "connect the mask made from this picture (same size), or disconnect 'mask'.")
        if image.shape[0] % m.shape[0] != 0:
            raise input_error("mask", f"{m.shape[0]} masks for {image.shape[0]} pictures.",
                              "give one mask, or one per picture of the batch.")
        if m.amax() <= 0:
            raise input_error("mask", "the mask is all zeros: nothing would be kept and the reference would "
                              "be a white picture (LoadImage's mask is empty for a picture without transparency).",
                              "connect a mask that is 1 on the subject (e.g. from a background-removal node), or "
                              "disconnect 'mask' and load a background remover in DreamO Preprocessor Loader.")
        if (mh, mw) != (ih, iw):
            m = F.interpolate(m.unsqueeze(1), size=(ih, iw), mode="bilinear").squeeze(1)
            if notes is not None and not uniform:
                notes.append(f"mask: resized from {mw}x{mh} to the picture's {iw}x{ih}")
        return m.repeat(image.shape[0] // m.shape[0], 1, 1), "mask input"
    if image.shape[-1] == 4:
        return image[..., 3], "image alpha"
    return None, None


MIN_SIDE = 16
"""Pictures with a side below this are refused: there is no subject left to see (1 latent pixel is 8)."""
UPSCALE_WARNING = 2.0
"""A reference enlarged more than this many times (per side) gets a visible warning: the model sees blur."""


def checked_image(image: torch.Tensor, notes: list[str]) -> torch.Tensor:
    """The IMAGE input as float RGB(A) in [0, 1] on the CPU, or a DreamOError saying what is wrong with it.

    16-bit pictures read by LoadImage arrive scaled to [0, 257] (it divides by 255): they are brought back to
    [0, 1] with a note; other values outside [0, 1] are clipped with a note; NaN/inf are errors."""
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise input_error("image", f"the picture is empty ({image.shape[2]}x{image.shape[1]} pixels).",
                          "connect a real picture (check the file LoadImage reads).")
    if min(image.shape[1], image.shape[2]) < MIN_SIDE:
        raise input_error("image", f"the picture is only {image.shape[2]}x{image.shape[1]} pixels: too small "
                          f"to be a reference (DreamO sees 16x16-pixel patches).",
                          f"use a picture at least {MIN_SIDE} pixels on its short side (256 or more gives detail).")
    image = image.float().cpu()
    if not torch.isfinite(image).all():
        raise input_error("image", "the picture has NaN or infinite values (an upstream node produced "
                          "invalid pixels).", "fix or remove the node that feeds 'image'; values must be in 0..1.")
    if image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    top, bottom = image.amax().item(), image.amin().item()
    if 1.0 < top <= 65535.0 / 255.0 + 1e-3 and bottom >= 0.0:
        image = image * (255.0 / 65535.0)
        notes.append("image: values up to 257 (a 16-bit picture as LoadImage reads it) rescaled to 0..1")
    elif top > 1.0 + 1e-6 or bottom < -1e-6:
        image = image.clamp(0.0, 1.0)
        notes.append(f"image: values from {bottom:.3g} to {top:.3g} clipped to 0..1")
    return image


def upscale_warning(source: torch.Tensor, pixels: torch.Tensor) -> list[str]:
    """A visible warning when a small reference is enlarged a lot (the model sees the enlarged, blurred copy)."""
    factor = min(pixels.shape[1] / source.shape[1], pixels.shape[2] / source.shape[2])
    if factor <= UPSCALE_WARNING:
        return []
    return [f"WARNING: the picture is only {source.shape[2]}x{source.shape[1]} pixels and is enlarged {factor:.1f}x "
            f"to {pixels.shape[2]}x{pixels.shape[1]}, which is what the model sees (blurred); use a larger "
            "picture or a lower 'resolution'"]


def _label(k: int, batch: int) -> str:
    return f" (image {k + 1} of {batch})" if batch > 1 else ""


WHITE = 235 / 255  # a channel value this light is white paper to the eye (JPEG noise and soft shadows included)
WHITE_BORDER = 0.9  # share of a picture's border pixels that must be white for it to count as "on white"


def on_white(rgb: torch.Tensor) -> bool:
    """True when every picture of the batch (B, H, W, 3) already shows its subject on white: at least 90% of its
    border pixels are white in all three channels (a product shot, a garment photographed on white)."""
    for img in rgb.float():
        border = torch.cat([img[0], img[-1], img[:, 0], img[:, -1]])
        if (border.min(dim=-1).values >= WHITE).float().mean().item() < WHITE_BORDER:
            return False
    return True


def _prepare_ip(image: torch.Tensor, resolution: int, mask, preprocessor, notes: list[str], task: str = "ip"):
    rgb = image[..., :3]
    fg, source = foreground_from_inputs(image, mask, notes)
    remover = getattr(preprocessor, "remover", None)
    if fg is None and remover is not None:
        fg = torch.from_numpy(np.stack([remover.mask(a) for a in to_uint8(rgb)]))
        source = f"built-in remover ({remover.model})"
    if fg is not None and bool((fg >= 1.0).all()):
        notes.append(f"{task}: background kept: the {source} keeps the whole picture (nothing to replace), but "
                     "DreamO expects the subject on white; connect a background-removal mask to 'mask', or load a "
                     "remover in DreamO Preprocessor Loader")
    elif fg is not None:
        rgb = paste_on_white(rgb, fg)
        notes.append(f"{task}: background replaced with white using the {source}")
    elif on_white(rgb):
        notes.append(f"{task}: the subject is already on white (the picture's border is), as DreamO expects: used "
                     "as is")
    else:
        notes.append(f"{task}: background kept (no mask input, no alpha channel, no background remover): the "
                     "picture is encoded as is, but DreamO expects the subject on white; connect a "
                     "background-removal mask to 'mask', or load a remover in DreamO Preprocessor Loader")
    try:
        pixels = resize_batch_to_area(rgb, resolution)
    except ValueError as e:
        raise input_error("resolution", str(e) + ".", "raise 'resolution' or use a larger image.") from e
    notes.append(f"{task}: resized {image.shape[2]}x{image.shape[1]} -> {pixels.shape[2]}x{pixels.shape[1]}")
    notes.extend(upscale_warning(image, pixels))
    return pixels


def _face_note(crop: IdCrop, source_hw: tuple[int, int], label: str) -> str:
    h, w = source_hw
    parts = []
    if crop.image.shape[:2] != (h, w):
        parts.append(f"capped {w}x{h} -> {crop.image.shape[1]}x{crop.image.shape[0]} (longest side {LONG_SIDE})")
    face = crop.faces[crop.chosen]
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    if len(crop.faces) > 1:
        parts.append(f"{len(crop.faces)} faces found, used the one nearest the centre (box {x1},{y1}-{x2},{y2}, "
                     f"score {face.score:.3f}; green in the detection view)")
    else:
        parts.append(f"face found (box {x1},{y1}-{x2},{y2}, score {face.score:.3f})")
    parts.append("aligned to 512x512 on the FFHQ template, parsed; background, ears, earrings, neck, necklace, "
                 "clothes and hat painted white")
    return f"id{label}: " + "; ".join(parts)


def _prepare_id(image, resolution, mask, preprocessor, id_fallback, device, notes, detections):
    if preprocessor is None:
        raise input_error("preprocessor", "'id' references need face detection, alignment and parsing.",
                          "connect a DreamO Preprocessor Loader to 'preprocessor' (its face models, from facexlib: "
                          "detection_Resnet50_Final.pth and parsing_bisenet.pth, go in models/facexlib).")
    if getattr(preprocessor, "face", None) is None:
        raise input_error("preprocessor", "this preprocessor was loaded without face models.",
                          "choose a face detector in DreamO Preprocessor Loader.")
    batch = image.shape[0]
    arr = to_uint8(image[..., :3])
    crops = [preprocessor.face.prepare_id(a, device) for a in arr]
    missing = [k for k, c in enumerate(crops) if c.pixels is None]
    for c in crops:
        if c.faces:
            detections.append(draw_faces(c.image, c.faces, c.chosen))
    if missing:
        which = ", ".join(str(k + 1) for k in missing)
        where = f"image(s) {which} of the batch" if batch > 1 else "the image"
        if id_fallback == "strict":
            raise input_error("id_fallback", f"no face was found in {where} (RetinaFace, confidence > "
                              f"{DETECTION_THRESHOLD}).", "use a picture with a clear, unobstructed face, or set "
                              "'id_fallback' to 'ip' to use it as a subject reference instead.")
        if len(missing) < batch:
            raise input_error("image", f"a face was found in some images of the batch but not in {where}; "
                              "the references of one batch must all be faces or all be used as ip.",
                              "remove the images without a face, split the batch, or set task 'ip'.")
        notes.append(f"id: no face found in {where}, so it fell back to ip (official behaviour; set "
                     "'id_fallback' to 'strict' to stop with an error instead)")
        return _prepare_ip(image, resolution, mask, preprocessor, notes, task="ip"), "ip"
    for k, c in enumerate(crops):
        notes.append(_face_note(c, tuple(arr.shape[1:3]), _label(k, batch)))
    if mask is not None:
        notes.append("id: the mask input is not used for id references (the face parser decides what is kept)")
    return to_float(np.stack([c.pixels for c in crops])), "id"


def prepare_pixels(image: torch.Tensor, task: str, resolution: int, mask=None, preprocessor=None,
                   id_fallback: str = "ip", device=None) -> PreparedPixels:
    """Pixels DreamO sees for a reference batch, plus notes on what was done. Raises a DreamOError naming the input
    (the calling node names itself) on bad input."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4) \
            or image.shape[0] == 0:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise input_error("image", f"expected an IMAGE batch (B, H, W, 3), got {shape}.",
                          "connect a LoadImage (or any IMAGE) output.")
    if task not in TASKS:
        raise input_error("task", f"unknown task '{task}'.", f"choose one of {', '.join(TASKS)}.")
    if id_fallback not in ID_FALLBACKS:
        raise input_error("id_fallback", f"unknown choice '{id_fallback}'.",
                          f"choose one of {', '.join(ID_FALLBACKS)}.")
    notes: list[str] = []
    image = checked_image(image, notes)
    detections: list[np.ndarray] = []
    if task == "id":
        pixels, used = _prepare_id(image, resolution, mask, preprocessor, id_fallback, device, notes, detections)
    elif task == "ip":
        pixels, used = _prepare_ip(image, resolution, mask, preprocessor, notes), "ip"
    else:
        if mask is not None:
            notes.append("style: the mask input is not used for style references (the background is kept)")
        try:
            pixels = resize_batch_to_area(image[..., :3], resolution)
        except ValueError as e:
            raise input_error("resolution", str(e) + ".", "raise 'resolution' or use a larger image.") from e
        notes.append(f"style: used as is, resized {image.shape[2]}x{image.shape[1]} -> "
                     f"{pixels.shape[2]}x{pixels.shape[1]}")
        notes.extend(upscale_warning(image, pixels))
        used = "style"
    return PreparedPixels(pixels=pixels, task=used, notes=notes, detections=detections)
