"""dreamo_ops.drawn_regions without the host: the region editor's text → one rectangle mask per slot, and the
errors a hand-written text gets."""
import json

import pytest
import torch

from comfyui_dreamo.dreamo_ops.drawn_regions import DrawnRegions, box_mask, dumps, parse
from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.routing import region_to_tokens

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

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper_nodes", "__init__.py")
    source = open(path).read()
    assert f'ROUTING_KEY = "{ROUTING_KEY}"' in source
    assert importlib.util.find_spec("comfyui_dreamo.dreamo_ops.drawn_regions") is not None
