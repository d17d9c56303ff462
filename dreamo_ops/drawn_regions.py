"""Regions drawn in DreamO Routing's region editor: the `drawn_regions` text → one rectangle mask per slot.

The editor (web/region_editor.js) stores its rectangles in DreamO Routing's optional STRING input
`drawn_regions`, so a workflow keeps them as an ordinary widget value: the API and a frontend without the
extension (a plain text field) run them the same. The text is JSON,

    {"width": W, "height": H, "boxes": {"1": [x, y, w, h], "2": [...]}}

in pixels of a W×H picture (the editor's preview of the output size). Each box is the rectangle
[x, x + w) × [y, y + h) (edges rounded to whole pixels) of that picture, 1 inside and 0 elsewhere, which DreamO
Routing stretches over the image like any region mask. An empty text means nothing drawn.

Bounded cost: a box reaches the routing as its geometry (`areas.Rectangle`), whose token coverage is computed
from the rectangle's edges, so a 16384 × 16384 picture (the largest, ComfyUI's MAX_RESOLUTION) costs what a
64 × 64 one does; no pixel mask is built. The text is at most MAX_TEXT characters, and malformed, deeply nested
or oversized values are named errors whose messages quote at most a few characters of the text.

Each region can also carry its own words (regional prompts, regional.py): an optional `"texts": {"1": "an old
man [ref#1]"}` maps a slot to the prompt of region k (whatever gives region k its area: the drawn box, a
connected region_k mask or a bounding box). Values without `texts` (older workflows) stay valid.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

from .errors import DreamOError
from .areas import Rectangle
from .token_layout import MAX_SLOTS

INPUT = "drawn_regions"
MAX_SIDE = 16384
"""ComfyUI's largest image side (nodes.MAX_RESOLUTION)."""
MAX_TEXT = 1_000_000
"""The longest `drawn_regions` text read (the editor writes about 30 characters a box)."""
KEYS = ("width", "height", "boxes", "texts")
MAX_WORDS = 4000
"""Characters of one region's words (about 1,000 T5 tokens)."""


@dataclass(frozen=True)
class DrawnRegions:
    width: int
    height: int
    boxes: dict = field(default_factory=dict)  # {slot: (x0, y0, x1, y1)} whole pixels, x1 > x0, y1 > y0
    texts: dict = field(default_factory=dict)  # {slot: the words of region k} (non-empty, stripped)

    def regions(self) -> dict[int, Rectangle]:
        """{slot: Rectangle}: the regions DreamO Routing uses (geometry only, no pixels)."""
        return {slot: Rectangle(self.width, self.height, box) for slot, box in sorted(self.boxes.items())}

    def masks(self) -> dict[int, torch.Tensor]:
        """{slot: (height, width) float32 mask}, 1 inside the slot's rectangle (height × width × 4 bytes each:
        for pictures and tests; routing uses `regions()`)."""
        return {slot: box_mask(self.width, self.height, box) for slot, box in sorted(self.boxes.items())}


def box_mask(width: int, height: int, box) -> torch.Tensor:
    """(height, width) float32 mask: 1 on rows y0..y1-1 and columns x0..x1-1 of `box` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    mask = torch.zeros(height, width, dtype=torch.float32)
    mask[y0:y1, x0:x1] = 1.0
    return mask


def _number(value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _brief(value) -> str:
    """A JSON value as a message quotes it: short, whatever its size or depth."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 24 else repr(value[:24]) + "…"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 24 else f"a {len(text)}-digit number"
    if isinstance(value, list):
        if len(value) <= 6 and all(isinstance(v, (int, float, str, bool)) or v is None for v in value):
            return "[" + ", ".join(_brief(v) for v in value) + "]"
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    return type(value).__name__


def parse(text, node: str, input_name: str = INPUT, max_slots: int = MAX_SLOTS) -> DrawnRegions | None:
    """The drawn regions in `text`, or None when nothing is drawn (empty text). A malformed text is a DreamOError
    naming `node` and `input_name`."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise DreamOError(node, input_name, f"expected text (JSON), got {type(text).__name__}.",
                          "leave it empty or draw the regions in the editor.")
    if len(text) > MAX_TEXT:
        raise DreamOError(node, input_name, f"the text is {len(text):,} characters long; drawn regions take at most "
                          f"{MAX_TEXT:,}.", "clear the text and draw the regions again in the editor.")
    if not text.strip():
        return None
    example = 'e.g. {"width": 1024, "height": 1024, "boxes": {"1": [0, 0, 512, 1024]}}'

    def bad(problem, fix=f"give JSON like {example} (x, y, width, height in pixels of width × height), or clear "
                         "the text to draw nothing."):
        return DreamOError(node, input_name, problem, fix)

    try:
        data = json.loads(text)
    except RecursionError:
        raise bad("the text is JSON nested too deeply to be drawn regions.") from None
    except ValueError as e:
        raise bad(f"the text is not valid JSON ({str(e)[:80]}).") from None
    if not isinstance(data, dict):
        raise bad(f"expected a JSON object with {', '.join(KEYS)}, got {type(data).__name__}.")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise bad(f"unknown key {_brief(unknown[0])} (the keys are {', '.join(KEYS)}).")
    size = {}
    for key in ("width", "height"):
        value = data.get(key)
        if not (_number(value) and float(value).is_integer() and 1 <= value <= MAX_SIDE):
            raise bad(f"'{key}' must be a whole number of pixels from 1 to {MAX_SIDE}, got {_brief(value)}.")
        size[key] = int(value)
    width, height = size["width"], size["height"]
    raw = data.get("boxes", {})
    if not isinstance(raw, dict):
        raise bad(f"'boxes' must map slot numbers to [x, y, width, height], got {type(raw).__name__}.")
    boxes = {}
    for key, box in raw.items():
        try:
            slot = int(key)
        except ValueError:
            slot = None
        if slot is None or str(slot) != str(key).strip() or not 1 <= slot <= max_slots:
            raise bad(f"box {_brief(key)} is not a reference slot (slots are 1 … {max_slots}).",
                      f"number each box by its reference slot, 1 … {max_slots}.")
        if slot in boxes:
            raise bad(f"slot {slot} has two boxes.", "keep one box per slot.")
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            raise bad(f"the box of slot {slot} must be [x, y, width, height] (four numbers), got {_brief(box)}.")
        x, y, w, h = (float(v) for v in box)
        if w <= 0 or h <= 0:
            raise bad(f"the box of slot {slot} is empty or negative ({w:g} × {h:g} pixels).",
                      f"draw a box with a positive width and height, or remove slot {slot}'s box.")
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise bad(f"the box of slot {slot}, [{x:g}, {y:g}, {w:g}, {h:g}], reaches outside the "
                      f"{width} × {height} picture.", f"keep x, y ≥ 0, x + width ≤ {width} and y + height ≤ "
                      f"{height}, or redraw the box in the editor.")
        x0, y0, x1, y1 = round(x), round(y), round(x + w), round(y + h)
        if x1 <= x0 or y1 <= y0:
            raise bad(f"the box of slot {slot} is smaller than one pixel once rounded.",
                      f"draw a larger box for slot {slot}.")
        boxes[slot] = (x0, y0, x1, y1)
    return DrawnRegions(width=width, height=height, boxes=boxes, texts=_texts(data.get("texts", {}), bad, max_slots))


def _texts(raw, bad, max_slots: int) -> dict:
    """{slot: words} from the optional "texts" object; empty words mean none."""
    if not isinstance(raw, dict):
        raise bad(f"'texts' must map slot numbers to the words of each region, got {type(raw).__name__}.")
    texts = {}
    for key, text in raw.items():
        slot = int(key) if isinstance(key, str) and key.strip().isdigit() and key == key.strip() else None
        if slot is None or not 1 <= slot <= max_slots:
            raise bad(f"text '{key}' is not a region number (regions are 1 … {max_slots}).",
                      f"number each region's words by its slot, 1 … {max_slots}.")
        if not isinstance(text, str):
            raise bad(f"the words of region {slot} must be text, got {type(text).__name__}.")
        if len(text) > MAX_WORDS:
            raise bad(f"the words of region {slot} are {len(text)} characters long (at most {MAX_WORDS}).",
                      f"shorten region {slot}'s words.")
        if text.strip():
            texts[slot] = text.strip()
    return texts


def dumps(width: int, height: int, boxes: dict, texts: dict | None = None) -> str:
    """The text the editor writes for `boxes` {slot: [x, y, w, h]} and `texts` {slot: words} (slot order,
    compact; no "texts" key when no region has words, as older values)."""
    data = {"width": int(width), "height": int(height),
            "boxes": {str(k): [int(v) for v in boxes[k]] for k in sorted(boxes, key=int)}}
    words = {str(k): texts[k] for k in sorted(texts or {}, key=int) if str(texts[k]).strip()}
    if words:
        data["texts"] = words
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
