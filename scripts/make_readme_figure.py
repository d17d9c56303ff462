"""Draw docs/dreamo_overview.png, the README's picture: references bound to prompt words, placed by regions,
and (when docs/routing_map_tiny.png exists: a routing map the pack captured in its end-to-end test) where
each reference's attention went; and docs/regional_prompts.png: the regional example's boxes with their words
(read from workflows/api/dreamo_regional_api.json) and the routing map with region prompts its server test
captured (docs/routing_map_regional_tiny.png, from tests/test_regional_server.py with DREAMO_SAVE_REGIONAL_MAP).
Drawn with Pillow only; no photo is copied into the repo.

    python scripts/make_readme_figure.py
"""
from __future__ import annotations

import os
import sys

from PIL import Image, ImageDraw, ImageFont

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "docs", "dreamo_overview.png")
ROUTING_MAP = os.path.join(REPO, "docs", "routing_map_tiny.png")
REGIONAL_OUT = os.path.join(REPO, "docs", "regional_prompts.png")
REGIONAL_MAP = os.path.join(REPO, "docs", "routing_map_regional_tiny.png")
REGIONAL_WORKFLOW = os.path.join(REPO, "workflows", "api", "dreamo_regional_api.json")
sys.path.insert(0, REPO)
from dreamo_ops.routing_map import SLOT_COLOURS as LEGEND  # noqa: E402  (one source of the slot colours)

SLOT_COLOURS = [LEGEND[1], LEGEND[2]]  # the routing-map legend's and region editor's colours for slots 1 and 2
BG, FG, DIM = (30, 31, 36), (240, 240, 240), (175, 178, 186)


def arrow(d: ImageDraw.ImageDraw, x: int, y: int) -> None:
    d.line((x, y, x + 50, y), fill=DIM, width=6)
    d.polygon(((x + 50, y - 14), (x + 70, y), (x + 50, y + 14)), fill=DIM)


def main() -> str:
    img = Image.new("RGB", (1200, 460), BG)
    d = ImageDraw.Draw(img)
    big, mid, small = (ImageFont.load_default(size=s) for s in (30, 20, 16))
    d.text((24, 16), "DreamO in ComfyUI: your references, bound to words, placed where you want them", font=big,
           fill=FG)
    cards = [("[ref#1]", "a face  (task: id)", "aligned, parsed, on white"),
             ("[ref#2]", "a cat  (task: ip)", "subject pasted on white")]
    for i, (tag, what, prep) in enumerate(cards):
        x, y = 24, 80 + i * 180
        d.rounded_rectangle((x, y, x + 250, y + 150), 14, fill=SLOT_COLOURS[i])
        d.text((x + 16, y + 12), tag, font=big, fill=FG)
        d.text((x + 16, y + 62), what, font=mid, fill=FG)
        d.text((x + 16, y + 112), prep, font=small, fill=FG)
    arrow(d, 290, 205)
    d.multiline_text((370, 96), "prompt (T5 reads [ref#k] as DreamO's\nlearned placeholder tokens):\n\n"
                     "\"a woman [ref#1] and a\n cat [ref#2] on a city\n street at sunset\"", font=mid,
                     fill=FG, spacing=6)
    d.multiline_text((370, 300), "references join the Flux token sequence\n(diagonal positions, index embeddings);\n"
                     "routing keeps each one on its region", font=small, fill=DIM, spacing=5)
    arrow(d, 700, 205)
    x, y, w, h = 770, 80, 190, 250
    d.rectangle((x, y, x + w // 2, y + h), fill=SLOT_COLOURS[0])
    d.rectangle((x + w // 2, y, x + w, y + h), fill=SLOT_COLOURS[1])
    d.text((x, y + h + 8), "regions drawn on\nDreamO Routing", font=small, fill=DIM)
    if os.path.isfile(ROUTING_MAP):
        rmap = Image.open(ROUTING_MAP).convert("RGB")
        rmap = rmap.resize((w, int(rmap.height * w / rmap.width)), Image.NEAREST)
        img.paste(rmap, (x + w + 30, y))
        d.text((x + w + 30, y + rmap.height + 8), "routing map: where each\nreference's attention went\n"
               "(captured by the pack in\nits end-to-end test)", font=small, fill=DIM)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    img.save(OUT, optimize=True)
    return OUT


def wrap_words(d: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and d.textlength(f"{line} {word}", font=font) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def regional() -> str:
    """docs/regional_prompts.png: the example's boxes and words, one evaluation per step, and the routing map."""
    import json

    api = json.load(open(REGIONAL_WORKFLOW))
    routing = next(n for n in api.values() if n["class_type"] == "DreamORouting")["inputs"]
    drawn = json.loads(routing["drawn_regions"])
    base = next(n for n in api.values() if n["class_type"] == "DreamOTextEncode")["inputs"]["text"]
    img = Image.new("RGB", (1200, 520), BG)
    d = ImageDraw.Draw(img)
    big, mid, small = (ImageFont.load_default(size=s) for s in (28, 18, 15))
    d.text((24, 16), "Regional prompts: each box its own words and reference, one model evaluation per step",
           font=big, fill=FG)
    x, y, w = 24, 76, 520
    h = round(w * drawn["height"] / drawn["width"])
    d.rectangle((x, y, x + w, y + h), fill=(45, 47, 54), outline=DIM)
    for slot, (bx, by, bw, bh) in sorted(drawn["boxes"].items()):
        colour = LEGEND[int(slot)]
        sx, sy = w / drawn["width"], h / drawn["height"]
        box = (x + bx * sx + 4, y + by * sy + 4, x + (bx + bw) * sx - 4, y + (by + bh) * sy - 4)
        d.rectangle(box, outline=colour, width=4)
        words = drawn.get("texts", {}).get(slot, "")
        d.multiline_text((box[0] + 12, box[1] + 12), wrap_words(d, f"{slot}: {words}", mid, int(box[2] - box[0] - 24)),
                         font=mid, fill=FG, spacing=4)
    d.multiline_text((x, y + h + 12), wrap_words(d, f"base prompt (the whole picture): \"{base}\"", small, w),
                     font=small, fill=DIM, spacing=4)
    d.text((x, y + h + 70), "drawn and typed on DreamO Routing (or core ConditioningSetMask entries converted by\n"
           "DreamO Regional Conditioning); a region costs its words' T5 tokens + 1", font=small, fill=DIM)
    arrow(d, 566, y + h // 2)
    if os.path.isfile(REGIONAL_MAP):
        rmap = Image.open(REGIONAL_MAP).convert("RGB")
        rmap = rmap.resize((520, round(rmap.height * 520 / rmap.width)), Image.NEAREST)
        img.paste(rmap, (650, y))
        d.multiline_text((650, y + rmap.height + 12), "routing map with region prompts: where each reference and\n"
                         "each region's words went (tests/test_regional_server.py, tiny\nrandom models, hard "
                         "routing; not yet run on real FLUX.1 weights)", font=small, fill=DIM, spacing=4)
    img.save(REGIONAL_OUT, optimize=True)
    return REGIONAL_OUT


if __name__ == "__main__":
    print(main())
    print(regional())
