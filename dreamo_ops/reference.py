"""A prepared DreamO reference (the DREAMO_REF value) and the pixel steps that prepare one."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .resize import area_size, resize_uint8

TASKS = ("ip", "id", "style")


@dataclass(frozen=True)
class DreamOReference:
    latent: torch.Tensor  # (B, C, h, w) raw VAE latent; ComfyUI applies the model's latent scaling itself
    task: str
    pixels: torch.Tensor  # (B, H, W, 3) in [0, 1]: exactly what was encoded
    notes: tuple[str, ...] = field(default_factory=tuple)


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
