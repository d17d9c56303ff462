import math

import cv2
import numpy as np
import pytest

from comfyui_dreamo.dreamo_ops.resize import area_size, long_side_size, resize_uint8

SIZES = [(h, w) for h in (17, 64, 300, 512, 513, 777, 1024, 1080, 1999, 4000) for w in (31, 512, 640, 1023, 3000)]


def official_area(h, w, res):
    # DreamO's resize_numpy_image_area, written out from its definition.
    k = math.sqrt(res * res / (h * w))
    hh, ww = int(h * k), int(w * k)
    return hh - hh % 16, ww - ww % 16


@pytest.mark.parametrize("res", [256, 512, 768, 1024])
def test_area_size_matches_the_official_rule(res):
    for h, w in SIZES:
        got = area_size(h, w, res)
        assert got == official_area(h, w, res)
        assert got[0] % 16 == 0 and got[1] % 16 == 0
        assert got[0] * got[1] <= res * res


def test_long_side_cap():
    assert long_side_size(2000, 1000, 1024) == (1024, 512)
    assert long_side_size(800, 600, 1024) == (800, 600)
    assert long_side_size(1000, 3001, 1024) == (int(1000 * 1024 / 3001), 1024)


def test_resize_uses_opencv_area_filter():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(300, 200, 3), dtype=np.uint8)
    out = resize_uint8(img, (144, 96))
    assert out.shape == (144, 96, 3) and out.dtype == np.uint8
    assert np.array_equal(out, cv2.resize(img, (96, 144), interpolation=cv2.INTER_AREA))
    assert not np.array_equal(out, cv2.resize(img, (96, 144), interpolation=cv2.INTER_LINEAR))
    assert resize_uint8(img, (300, 200)) is img
