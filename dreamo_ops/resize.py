"""DreamO's reference resize rules (official preprocessing), on uint8 HWC arrays with OpenCV's area filter.

OpenCV is used because the official code resizes with `cv2.INTER_AREA`; matching its filter keeps the
references the model sees identical to the ones it was trained and evaluated on.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

MULTIPLE = 16


def area_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Size with area close to resolution², each side floored to a multiple of 16 (official rule)."""
    k = math.sqrt(resolution * resolution / (height * width))
    h = int(height * k)
    w = int(width * k)
    return h - h % MULTIPLE, w - w % MULTIPLE


def long_side_size(height: int, width: int, long_edge: int) -> tuple[int, int]:
    """Size with the longest side capped at `long_edge` (unchanged when already within it)."""
    if max(height, width) <= long_edge:
        return height, width
    k = long_edge / max(height, width)
    return int(height * k), int(width * k)


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) uint8 image to (h, w) with area interpolation."""
    h, w = size
    if (h, w) == image.shape[:2]:
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
