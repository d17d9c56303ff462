"""dreamo_ops.drawn_regions without the host: the region editor's text → one rectangle mask per slot, and the
errors a hand-written text gets."""
import json

import pytest
import torch

from comfyui_dreamo.dreamo_ops.drawn_regions import DrawnRegions, box_mask, dumps, parse
from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.areas import region_to_tokens

NODE = "DreamORouting"


def reference_mask(width, height, x, y, w, h):
    """Independent: a pixel (column c, row r) is inside when its centre lies in the rounded rectangle."""
    x0, x1, y0, y1 = round(x), round(x + w), round(y), round(y + h)
    out = torch.zeros(height, width)
    for r in range(height):
        for c in range(width):
            out[r, c] = float(x0 <= c + 0.5 < x1 and y0 <= r + 0.5 < y1)
    return out


@pytest.mark.parametrize("text", ["", "   ", "\n", None])
def test_empty_text_means_nothing_drawn(text):
    assert parse(text, NODE) is None


def test_boxes_become_masks_one_per_slot():
    text = json.dumps({"width": 24, "height": 16, "boxes": {"2": [3, 1, 7, 9], "1": [0, 0, 24, 16],
                                                              "9": [20.6, 10.2, 3.0, 5.5]}})
    drawn = parse(text, NODE)
    assert isinstance(drawn, DrawnRegions) and (drawn.width, drawn.height) == (24, 16)
    masks = drawn.masks()
    assert list(masks) == [1, 2, 9]
    assert torch.equal(masks[1], torch.ones(16, 24))
    assert torch.equal(masks[2], reference_mask(24, 16, 3, 1, 7, 9))
    assert torch.equal(masks[9], reference_mask(24, 16, 20.6, 10.2, 3.0, 5.5))
    assert masks[2].sum() == 7 * 9 and masks[9].sum() == 3 * 6  # x 21..23, y 10..15
    assert all(m.dtype == torch.float32 and m.shape == (16, 24) for m in masks.values())


def test_a_drawn_box_covers_the_tokens_under_it():
    """A box drawn on a 1024² preview of a 64×64 latent (32×32 tokens): the left 3/8 are the tokens of columns
    0..11, fully covered; the others are not covered at all."""
    drawn = parse(dumps(1024, 1024, {1: [0, 256, 384, 512]}), NODE)
    coverage = region_to_tokens(drawn.masks()[1], (64, 64))
    expected = torch.zeros(32, 32)
    expected[8:24, :12] = 1
    assert torch.equal(coverage, expected)


def test_dumps_round_trips_and_orders_slots():
    text = dumps(640, 480, {"3": [1, 2, 3, 4], 1: [0, 0, 10, 10]})
    assert text == '{"width":640,"height":480,"boxes":{"1":[0,0,10,10],"3":[1,2,3,4]}}'
    assert parse(text, NODE).boxes == {1: (0, 0, 10, 10), 3: (1, 2, 4, 6)}


def test_box_mask_matches_the_reference():
    for box in [(0, 0, 5, 5), (2, 3, 7, 4), (4, 0, 5, 1)]:
        x0, y0, x1, y1 = box
        assert torch.equal(box_mask(6, 5, box), reference_mask(6, 5, x0, y0, x1 - x0, y1 - y0))


@pytest.mark.parametrize("text, words", [
    ("{oops", "the text is not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"width": 64, "height": 64, "box": {}}', "unknown key 'box'"),
    ('{"height": 64, "boxes": {}}', "'width' must be a whole number"),
    ('{"width": 0, "height": 64}', "'width' must be a whole number of pixels from 1 to 16384, got 0"),
    ('{"width": 64, "height": 12.5}', "'height' must be a whole number"),
    ('{"width": 64, "height": true}', "'height' must be a whole number"),
    ('{"width": 64, "height": 64, "boxes": [[0, 0, 1, 1]]}', "'boxes' must map slot numbers"),
    ('{"width": 64, "height": 64, "boxes": {"0": [0, 0, 8, 8]}}', "box '0' is not a reference slot (slots are 1 … 9)"),
    ('{"width": 64, "height": 64, "boxes": {"10": [0, 0, 8, 8]}}', "box '10' is not a reference slot"),
    ('{"width": 64, "height": 64, "boxes": {"a": [0, 0, 8, 8]}}', "box 'a' is not a reference slot"),
    ('{"width": 64, "height": 64, "boxes": {"1": [0, 0, 8, 8], "01": [0, 0, 8, 8]}}', "box '01' is not"),
    ('{"width": 64, "height": 64, "boxes": {"1": [0, 0, 8]}}', "must be [x, y, width, height] (four numbers)"),
    ('{"width": 64, "height": 64, "boxes": {"1": [0, 0, "8", 8]}}', "four numbers"),
    ('{"width": 64, "height": 64, "boxes": {"1": [0, 0, 0, 8]}}', "the box of slot 1 is empty or negative"),
    ('{"width": 64, "height": 64, "boxes": {"2": [10, 10, 5, -3]}}', "the box of slot 2 is empty or negative"),
    ('{"width": 64, "height": 64, "boxes": {"1": [-1, 0, 8, 8]}}', "reaches outside the 64 × 64 picture"),
    ('{"width": 64, "height": 64, "boxes": {"1": [0, 60, 8, 8]}}', "reaches outside the 64 × 64 picture"),
    ('{"width": 64, "height": 64, "boxes": {"1": [3.6, 0, 0.3, 8]}}', "smaller than one pixel once rounded"),
])
def test_bad_text_is_an_error_naming_node_input_and_fix(text, words):
    with pytest.raises(DreamOError) as e:
        parse(text, NODE)
    message = str(e.value)
    assert message.startswith("DreamORouting (input 'drawn_regions'): ")
    assert words in message, message
    assert "Fix: " in message


def test_not_a_string_is_an_error():
    with pytest.raises(DreamOError, match="expected text"):
        parse(12, NODE)


def test_fewer_slots_can_be_allowed():
    with pytest.raises(DreamOError, match="slots are 1 … 2"):
        parse('{"width": 8, "height": 8, "boxes": {"3": [0, 0, 4, 4]}}', NODE, max_slots=2)


def test_the_test_node_reads_routing_where_the_pack_puts_it():
    import importlib.util
    import os

    from comfyui_dreamo.dreamo_ops.flux_wrapper import ROUTING_KEY

    from dreamo_testkit import HELPER_NODES

    path = os.path.join(HELPER_NODES, "__init__.py")
    source = open(path).read()
    assert f'ROUTING_KEY = "{ROUTING_KEY}"' in source
    assert importlib.util.find_spec("comfyui_dreamo.dreamo_ops.drawn_regions") is not None


# --- bounded cost (issue 19): boxes are geometry, the coverage comes from the rectangle's edges ------------------

def test_rectangle_coverage_is_exactly_the_pixel_masks():
    """Every box of small pictures, over latents of several sizes and aspects (odd ones padded by Flux): the
    coverage from the geometry equals, bit for bit, the coverage of the rectangle's pixel mask."""
    import random

    from comfyui_dreamo.dreamo_ops.areas import Rectangle, rectangle_to_tokens
    from comfyui_dreamo.dreamo_ops.routing_bias import INSIDE_THRESHOLD

    rng = random.Random(19)
    for width in range(1, 11):
        for height in range(1, 8):
            for latent in [(1, 1), (2, 2), (3, 5), (6, 8), (7, 7), (13, 9)]:
                for _ in range(6):
                    x0, y0 = rng.randrange(width), rng.randrange(height)
                    box = (x0, y0, rng.randrange(x0 + 1, width + 1), rng.randrange(y0 + 1, height + 1))
                    pixels = region_to_tokens(box_mask(width, height, box), latent)
                    got = rectangle_to_tokens(box, (height, width), latent)
                    assert torch.equal(got, pixels), (width, height, latent, box)
                    assert torch.equal(region_to_tokens(Rectangle(width, height, box), latent), pixels)
                    assert torch.equal(got >= INSIDE_THRESHOLD, pixels >= INSIDE_THRESHOLD)
    for width, height, latent, box in [(1024, 1024, (128, 128), (0, 256, 384, 768)), (1000, 600, (75, 131),
                                       (333, 17, 999, 401)), (37, 1500, (160, 9), (5, 700, 36, 1499))]:
        assert torch.equal(rectangle_to_tokens(box, (height, width), latent),
                           region_to_tokens(box_mask(width, height, box), latent))


def test_the_largest_picture_costs_no_pixel_memory():
    """The 63-character value that built a 16384² float32 mask (1 GiB, then a float64 copy) and nine boxes that
    failed with an allocator error: parsed and turned into token coverage in a fresh process whose peak memory
    grows by less than 64 MiB."""
    import os
    import subprocess
    import sys

    code = """
import os, resource, sys
sys.path.insert(0, sys.argv[1])
from dreamo_testkit.pack_import import register_package
register_package()  # the repo as comfyui_dreamo (no ComfyUI on the path: its ops only)
import torch
from comfyui_dreamo.dreamo_ops.drawn_regions import parse
from comfyui_dreamo.dreamo_ops.areas import region_to_tokens
texts = ['{"width":16384,"height":16384,"boxes":{"1":[0,0,8,8]}}',
         '{"width":16384,"height":16384,"boxes":{%s}}' % ",".join(f'"{k}":[0,0,16384,16384]' for k in range(1, 10))]
region_to_tokens(parse('{"width":8,"height":8,"boxes":{"1":[0,0,8,8]}}', "DreamORouting").regions()[1], (16, 16))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for text in texts:
    for slot, region in parse(text, "DreamORouting").regions().items():
        cov = region_to_tokens(region, (256, 256))
        assert cov.shape == (128, 128) and cov.sum().item() == (1 / 256 if len(text) < 80 else 128 * 128), slot
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    from dreamo_testkit import REPO as repo
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    out = subprocess.run([sys.executable, "-c", code, repo], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) < 64, out.stdout  # MiB


def test_a_large_mask_is_read_in_bands_with_the_same_coverage(monkeypatch):
    from comfyui_dreamo.dreamo_ops import areas

    g = torch.Generator().manual_seed(19)
    mask = (torch.rand(301, 517, generator=g) > 0.4).float()
    whole = region_to_tokens(mask, (40, 56))
    monkeypatch.setattr(areas, "COVERAGE_CHUNK", 517 * 7)  # bands of 7 rows
    banded = region_to_tokens(mask, (40, 56))
    assert torch.allclose(banded, whole, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"width": ' + "[" * 5_000 + "]" * 5_000 + ', "height": 64}', "nested too deeply"),
    ('{"width": 1' + "0" * 400 + ', "height": 64}', "'width' must be a whole number of pixels from 1 to 16384, got "
                                                      "a 401-digit number"),
    ('{"width": 16385, "height": 64}', "from 1 to 16384, got 16385"),
    ('{"width": 64, "height": 64, "boxes": {"1": [0, 0, 1' + "0" * 400 + ', 8]}}', "got [0, 0, a 401-digit number, 8]"),
    ('{"width": 64, "height": 64, "boxes": {"' + "7" * 10_000 + '": [0, 0, 8, 8]}}', "box '777777777777777777777777'…"),
    ('{"width": 64, "height": 64, "' + "k" * 10_000 + '": 1}', "unknown key 'kkkkkkkkkkkkkkkkkkkkkkkk'…"),
    ('{"width": 64, "height": 64, "boxes": {"1": [' + "[0], " * 10_000 + '0]}}',
     "got a list of 10001 items"),
    ('{"width": 64, "height": 64}' + " " * 1_000_000, "at most 1,000,000"),
], ids=["nested", "nested-value", "huge-width", "width-too-large", "huge-box-number", "long-slot", "long-key",
        "long-box", "long-text"])
def test_hostile_text_is_a_short_named_error(text, words):
    with pytest.raises(DreamOError) as e:
        parse(text, NODE)
    message = str(e.value)
    assert message.startswith("DreamORouting (input 'drawn_regions'): ") and "Fix: " in message
    assert words in message, message
    assert len(message) < 400, len(message)
