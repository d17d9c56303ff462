"""Where DreamO's reference tokens sit in the Flux sequence.

The image stream is [image tokens | ref A tokens | ref B tokens ...]. Reference tokens are placed on the
diagonal after the image: a reference's rows start at the image's row count plus the rows of every earlier
reference, and likewise for columns (token units, RoPE channel 0 stays 0). The slot (1..9) is the reference's
input socket; it chooses the index embedding and the `[ref#k]` placeholder, never the position.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_SLOTS = 9
PATCH_SIZE = 2


def tokens_along(latent_size: int, patch_size: int = PATCH_SIZE) -> int:
    """Token count along one latent axis; Flux pads odd sizes up to the patch size."""
    return (latent_size + patch_size - 1) // patch_size


@dataclass(frozen=True)
class RefTokens:
    slot: int
    rows: int
    cols: int
    row_offset: int
    col_offset: int

    @property
    def count(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class TokenLayout:
    image_rows: int
    image_cols: int
    refs: tuple[RefTokens, ...]

    @property
    def image_count(self) -> int:
        return self.image_rows * self.image_cols

    @property
    def total_count(self) -> int:
        return self.image_count + sum(r.count for r in self.refs)


def validate_slots(slots) -> tuple[int, ...]:
    slots = tuple(int(s) for s in slots)
    for s in slots:
        if not 1 <= s <= MAX_SLOTS:
            raise ValueError(f"reference slot {s} is outside 1..{MAX_SLOTS}")
    if len(set(slots)) != len(slots):
        raise ValueError(f"reference slots must be distinct, got {list(slots)}")
    return slots


def reference_layout(image_hw, ref_hws, slots, patch_size: int = PATCH_SIZE) -> TokenLayout:
    """Layout of the image stream for a latent of size `image_hw` and references of latent sizes `ref_hws`."""
    slots = validate_slots(slots)
    if len(slots) != len(ref_hws):
        raise ValueError(f"{len(ref_hws)} reference latents but {len(slots)} slots")
    rows = tokens_along(image_hw[0], patch_size)
    cols = tokens_along(image_hw[1], patch_size)
    row_offset, col_offset = rows, cols
    refs = []
    for slot, (h, w) in zip(slots, ref_hws):
        r, c = tokens_along(h, patch_size), tokens_along(w, patch_size)
        refs.append(RefTokens(slot, r, c, row_offset, col_offset))
        row_offset += r
        col_offset += c
    return TokenLayout(rows, cols, tuple(refs))


def _grid_ids(rows: int, cols: int, row_offset: int, col_offset: int) -> torch.Tensor:
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows).unsqueeze(1) + row_offset
    ids[..., 2] = torch.arange(cols).unsqueeze(0) + col_offset
    return ids.reshape(rows * cols, 3)


def position_ids(layout: TokenLayout) -> torch.Tensor:
    """RoPE ids (tokens, 3) of the image stream, in sequence order."""
    parts = [_grid_ids(layout.image_rows, layout.image_cols, 0, 0)]
    parts += [_grid_ids(r.rows, r.cols, r.row_offset, r.col_offset) for r in layout.refs]
    return torch.cat(parts, dim=0)
