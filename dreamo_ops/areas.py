"""Where a region is, as the routing reads it: the coverage of each image token by an area.

An area is a mask of any size (stretched over the image), a drawn rectangle (`Rectangle`: whole pixels of a picture
stretched over the image, from the region editor) or a box (`BoxArea`: pixels of the generated image, or of a frame,
from core's bounding boxes). Each token gets the exact area-weighted coverage of its `patch_size`×`patch_size` latent
cell (`area_coverage`); one rule for every size and aspect. Rectangles and boxes are computed from their geometry,
without a pixel mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import input_error

COVERAGE_CHUNK = 1 << 22
"""Mask pixels converted to float64 at a time when a large mask's coverage is computed (32 MiB)."""
VAE_SCALE = 8
"""Pixels of the generated image per latent pixel."""


def _cell_weights(src: int, dst: int, cell: float, extent: float) -> torch.Tensor:
    """(dst, src) matrix: fraction of destination cell d (covering [d·cell, (d+1)·cell) ∩ [0, extent)) that
    source pixel s covers when `src` pixels span [0, extent)."""
    edges_src = torch.arange(src + 1, dtype=torch.float64) * (extent / src)
    lo = torch.arange(dst, dtype=torch.float64) * cell
    hi = torch.clamp(lo + cell, max=extent)
    overlap = (torch.minimum(hi[:, None], edges_src[None, 1:]) - torch.maximum(lo[:, None], edges_src[None, :-1]))
    overlap = overlap.clamp(min=0)
    return overlap / (hi - lo).clamp(min=1e-12)[:, None]


@dataclass(frozen=True)
class Rectangle:
    """A region given by its geometry: 1 on pixel rows y0..y1-1 and columns x0..x1-1 of a width × height
    picture, 0 elsewhere, stretched over the image like any region mask. Its token coverage comes from the
    geometry (`rectangle_to_tokens`), so no pixel mask is built, whatever the picture's size."""
    width: int
    height: int
    box: tuple  # (x0, y0, x1, y1), whole pixels, 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height

    @property
    def shape(self) -> tuple:
        return (self.height, self.width)

    def mask(self) -> torch.Tensor:
        """The (height, width) float32 pixel mask (height × width × 4 bytes: for pictures and tests, not routing)."""
        x0, y0, x1, y1 = self.box
        out = torch.zeros(self.height, self.width, dtype=torch.float32)
        out[y0:y1, x0:x1] = 1.0
        return out


def _span_coverage(lo: int, hi: int, src: int, dst: int, cell: int, extent: int) -> torch.Tensor:
    """(dst,) float64: the fraction of destination cell d ([d·cell, (d+1)·cell) ∩ [0, extent)) covered by source
    pixels lo..hi-1 when `src` pixels span [0, extent). Exact: lengths are counted in units of 1/src, as integers,
    and each fraction is one correctly rounded division (the row or column factor of `_cell_weights`' route)."""
    d = torch.arange(dst, dtype=torch.int64)
    c0 = d * (cell * src)
    c1 = torch.clamp((d + 1) * cell, max=extent) * src
    overlap = (torch.clamp(c1, max=hi * extent) - torch.clamp(c0, min=lo * extent)).clamp(min=0)
    return overlap.double() / (c1 - c0).clamp(min=1).double()


def rectangle_to_tokens(box, size_hw, latent_hw, patch_size: int = 2) -> torch.Tensor:
    """Coverage of each image token by the rectangle `box` = (x0, y0, x1, y1) (whole pixels) of a picture of
    `size_hw` = (height, width) pixels: (rows, cols) float32 in [0, 1], what `region_to_tokens` gives for the
    rectangle's pixel mask (the same rule: exact area coverage), computed from the geometry in O(rows · cols)
    time and memory, whatever the picture's size."""
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = int(size_hw[0]), int(size_hw[1])
    h, w = int(latent_hw[0]), int(latent_hw[1])
    rows, cols = -(-h // patch_size), -(-w // patch_size)
    down = _span_coverage(y0, y1, height, rows, patch_size, h)
    across = _span_coverage(x0, x1, width, cols, patch_size, w)
    return torch.outer(down, across).to(torch.float32)


def region_to_tokens(mask, latent_hw, patch_size: int = 2) -> torch.Tensor:
    """Coverage of each image token by `mask` ((H, W) or (1, H, W), 1 = inside; or a `Rectangle`), as (rows, cols)
    in [0, 1].

    The rule, the same for every size and aspect: the mask is stretched over the whole image (its corners on the
    image's corners), and each token gets the exact area-weighted mean of the mask over the part of its
    `patch_size`×`patch_size` latent cell that lies inside the image (Flux pads odd latents; padding is ignored).
    A mask larger than COVERAGE_CHUNK pixels is read a band of rows at a time (bounded extra memory).
    """
    if isinstance(mask, Rectangle):
        return rectangle_to_tokens(mask.box, mask.shape, latent_hw, patch_size)
    if mask.ndim == 3:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"a region mask must be (H, W) or (1, H, W), got {tuple(mask.shape)}")
    h, w = int(latent_hw[0]), int(latent_hw[1])
    rows, cols = -(-h // patch_size), -(-w // patch_size)
    wr = _cell_weights(mask.shape[0], rows, patch_size, h)
    wc = _cell_weights(mask.shape[1], cols, patch_size, w)
    mask = mask.detach()
    if mask.numel() <= COVERAGE_CHUNK:
        return (wr @ mask.to("cpu", torch.float64).clamp(0, 1) @ wc.T).to(torch.float32)
    band = max(1, COVERAGE_CHUNK // mask.shape[1])
    down = torch.zeros(rows, mask.shape[1], dtype=torch.float64)
    for r0 in range(0, mask.shape[0], band):
        down += wr[:, r0:r0 + band] @ mask[r0:r0 + band].to("cpu", torch.float64).clamp(0, 1)
    return (down @ wc.T).to(torch.float32)


@dataclass(frozen=True)
class BoxArea:
    """A rectangle [x0, x1) × [y0, y1) in pixels of a `frame` (width, height) stretched over the image, or, when
    `frame` is None, in pixels of the generated image itself (latent size × 8), clipped to it."""
    x0: float
    y0: float
    x1: float
    y1: float
    frame: tuple | None = None
    source: str = "bboxes"  # the input it came from (named in errors)

    def coverage(self, latent_hw, patch_size: int = 2) -> torch.Tensor:
        h, w = int(latent_hw[0]), int(latent_hw[1])
        fw, fh = self.frame if self.frame is not None else (w * VAE_SCALE, h * VAE_SCALE)
        cov = torch.outer(_axis_cover(self.y0, self.y1, fh, h, patch_size),
                          _axis_cover(self.x0, self.x1, fw, w, patch_size)).to(torch.float32)
        if not bool((cov > 0).any()):
            raise input_error(self.source, f"the box [{self.x0:g}, {self.y0:g}, {self.x1 - self.x0:g}, "
                              f"{self.y1 - self.y0:g}] lies outside the {fw} × {fh} image.",
                              "give boxes in pixels of the generated image (the latent's size × 8).")
        return cov


def _axis_cover(lo: float, hi: float, frame: float, latent: int, patch: int) -> torch.Tensor:
    """Fraction of each token cell along one axis covered by [lo, hi) of a `frame`-pixel axis stretched over the
    `latent` cells (exact area; cells past the latent's edge, Flux's padding, are cut)."""
    a, b = lo * latent / frame, hi * latent / frame
    n = -(-latent // patch)
    cell_lo = torch.arange(n, dtype=torch.float64) * patch
    cell_hi = torch.clamp(cell_lo + patch, max=latent)
    overlap = (torch.clamp(cell_hi, max=b) - torch.clamp(cell_lo, min=a)).clamp(min=0)
    return overlap / (cell_hi - cell_lo)


def area_coverage(area, latent_hw, patch_size: int = 2) -> torch.Tensor:
    """(rows, cols) token coverage of an area: a mask (any size, stretched over the image) or a `BoxArea`."""
    if isinstance(area, BoxArea):
        return area.coverage(latent_hw, patch_size)
    return region_to_tokens(area, latent_hw, patch_size)
