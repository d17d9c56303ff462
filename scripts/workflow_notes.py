"""Each example workflow's name in the Templates dialog and the short note it opens with.

ComfyUI's Templates dialog (frontends 1.27 and 1.49) shows a pack's templates under the pack's folder name, with
the file name as each card's title and description: it reads no title or description for them from anywhere else
(core templates get theirs from an index.json and the translation files). So the template files are named as
their cards should read ("DreamO subject (ip).json"), and the category is named through the pack's translation
file (locales/en/main.json: templateWorkflows.category.<folder>, which both frontends look up).

The note is markdown (a MarkdownNote node): what the workflow does, the files it needs and the settings that
matter, with links to the README for the rest. Settings come from the official app (github.com/bytedance/DreamO,
app.py's defaults and examples, and dreamo_generator.py's reference preparation); scripts/export_ui_workflows.py
puts the note in the UI files.
"""
from __future__ import annotations

README = "https://github.com/comfyui-dreamo/comfyui-dreamo"
MODELS = f"[model files]({README}#install-the-models)"
BASE = "FLUX.1-dev, clip_l + t5xxl, ae, DreamO v1.1 + FLUX.1-Turbo-Alpha"
FACE = "facexlib's `detection_Resnet50_Final.pth` and `parsing_bisenet.pth`"
REMOVER = "a background remover (`BEN2_Base.onnx` in `models/rembg`)"
SETTINGS = "12 steps with turbo, guidance 4.5, cfg 1 (the cfg-distill LoRA replaces it)"

NOTES = {
    "dreamo_ip": {
        "template": "DreamO subject (ip)",
        "what": "One object on a new background: the remover cuts it out and pastes it on white, as the official "
                "app does. No remover? Set it to none and connect a mask to the encode node's `mask`.",
        "needs": [REMOVER], "settings": "1024×1024",
    },
    "dreamo_id": {
        "template": "DreamO identity (id)",
        "what": "One face in a new picture: the face is detected, aligned and parsed (`strict`: no face is an "
                "error). For more prompts, copy the prompt → output nodes: they share the models and the face.",
        "needs": [FACE], "settings": "1024×1024",
    },
    "dreamo_id_tryon": {
        "template": "DreamO try-on, face and garment (id, ip)",
        "what": "A face (id, `[ref#1]`) wearing a garment (ip, `[ref#2]`, background removed). A second garment: "
                "copy its two nodes, connect it to `ref_3` and name it `[ref#3]`.",
        "needs": [FACE, REMOVER], "settings": "768×1024 portrait",
    },
    "dreamo_tryon": {
        "template": "DreamO try-on, garments (ip)",
        "what": "Two garments (ip, backgrounds removed) worn by a person the prompt describes; no face reference.",
        "needs": [REMOVER], "settings": "768×1024 portrait",
    },
    "dreamo_style": {
        "template": "DreamO style transfer (style)",
        "what": "A style picture plus a content prompt that starts with DreamO's style instruction "
                "`generate a same style image.`; the style picture is only resized.",
        "needs": [], "settings": "1024×1024",
    },
    "dreamo_style_subject": {
        "template": "DreamO subject in a style (ip, style)",
        "what": "A subject (ip, `[ref#1]`) drawn in the style of another picture (style, `[ref#2]`).",
        "needs": [REMOVER], "settings": "1024×1024",
    },
    "dreamo_multi_subject": {
        "template": "DreamO two subjects with regions (routing)",
        "what": "Two subjects placed left and right: draw one rectangle per slot on DreamO Routing (or connect a "
                "MASK to `region_k`); DreamO Routing Map shows where each reference went. "
                f"[Routing]({README}#routing)",
        "needs": [], "settings": "1024×1024, routing hard with references isolated",
    },
    "dreamo_regional": {
        "template": "DreamO regional prompts, two people (id, routing)",
        "what": "Two people (id, `[ref#1]` left, `[ref#2]` right), each box on DreamO Routing with its own words "
                "(typed under the editor), routed there with the references in one pass per step. "
                f"[Regional prompts]({README}#regional-prompts)",
        "needs": [FACE], "settings": "1280×768, routing hard",
    },
}


def template_name(key: str) -> str:
    """The UI file's name (without .json) of the API workflow `key` (dreamo_ip for workflows/api/dreamo_ip_api.json):
    the card title in the Templates dialog."""
    return NOTES[key]["template"]


def note_text(key: str) -> str:
    """The markdown of a workflow's note."""
    note = NOTES[key]
    needs = ", ".join([BASE] + note["needs"])
    return "\n".join([
        f"### {note['template']}",
        note["what"],
        "",
        f"**Needs** {needs} ({MODELS}). Nothing is downloaded: a missing file is an error naming it.",
        "",
        f"**Settings** (official app): {note['settings']}, {SETTINGS}. [More]({README}#workflows)",
    ])
