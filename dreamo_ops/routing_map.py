"""Routing maps as pictures: token-grid maps → image-sized masks and a coloured heat-map overlay with a legend."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SLOT_COLOURS = {1: (230, 25, 75), 2: (60, 180, 75), 3: (0, 130, 200), 4: (245, 130, 48), 5: (145, 30, 180),
                6: (70, 240, 240), 7: (240, 50, 230), 8: (210, 245, 60), 9: (250, 190, 212)}
"""One colour per reference slot (distinct on light and dark pictures)."""
WORDS_TINT = 0.45
"""Region k's words (map key ("region", k)) are drawn in slot k's colour mixed this much with white."""


def colour_of(key) -> tuple:
    """The RGB colour of a routing-map key: a reference slot k, or ("region", k) for region k's words."""
    if isinstance(key, int):
        return SLOT_COLOURS[key]
    return tuple(round(c + (255 - c) * WORDS_TINT) for c in SLOT_COLOURS[key[1]])


def upsample_map(grid_map: torch.Tensor, latent_hw, size_hw, patch_size: int = 2, vae_scale: int = 8):
    """(B, rows, cols) token-grid map → (B, H, W): each token's value over its pixel cell (nearest), cropped to the
    latent's pixel size (Flux pads odd latents), then resized bilinearly to `size_hw` if that differs."""
    cell = patch_size * vae_scale
    up = grid_map.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)
    h, w = int(latent_hw[0]) * vae_scale, int(latent_hw[1]) * vae_scale
    up = up[:, :h, :w]
    if (h, w) != tuple(size_hw):
        up = F.interpolate(up[:, None], size=tuple(size_hw), mode="bilinear", align_corners=False)[:, 0]
    return up


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its own maximum (a map of zeros stays zero)."""
    peak = maps.flatten(1).amax(dim=1).clamp(min=1e-12)
    return maps / peak[:, None, None]


def overlay(image: torch.Tensor, heat: dict, opacity: float = 0.65) -> torch.Tensor:
    """Heat maps {slot: (B, H, W) in [0, 1]} over `image` (B, H, W, 3) in [0, 1], one colour per slot."""
    out = image.clone()
    for slot, h in heat.items():
        colour = torch.tensor(colour_of(slot), dtype=image.dtype) / 255.0
        a = (h.clamp(0, 1) * opacity)[..., None].to(image.dtype)
        out = out * (1 - a) + colour * a
    return out


def draw_legend(image: torch.Tensor, labels: dict) -> torch.Tensor:
    """A legend (a colour square and a label per slot) in the top-left corner of each image."""
    from PIL import Image, ImageDraw

    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = []
    for a in arr:
        pil = Image.fromarray(a)
        draw = ImageDraw.Draw(pil)
        box = max(6, min(pil.size) // 32)
        y = 2
        for slot, text in labels.items():
            draw.rectangle([2, y, 2 + box, y + box], fill=colour_of(slot), outline=(0, 0, 0))
            draw.text((6 + box, y), text, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
            y += box + 4
        out.append(np.asarray(pil))
    return torch.from_numpy(np.stack(out)).float() / 255.0
