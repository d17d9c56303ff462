"""The text of the Note node in each example workflow: the model files and the settings that matter, with sources.

Settings come from the official app (github.com/bytedance/DreamO, app.py's defaults and examples, and
dreamo_generator.py's reference preparation); scripts/export_ui_workflows.py puts this text in the UI files, and
the README's workflow table repeats the essentials.
"""
from __future__ import annotations

SOURCE = "bytedance/DreamO app.py (defaults, examples) and dreamo_generator.py"

BASE_FILES = [
    ("flux1-dev.safetensors (23.8 GB; fp8: weight_dtype fp8_e4m3fn in the loader)", "models/diffusion_models",
     "huggingface.co/black-forest-labs/FLUX.1-dev"),
    ("clip_l.safetensors (246 MB), t5xxl_fp16.safetensors (9.79 GB) or t5xxl_fp8_e4m3fn.safetensors (4.89 GB)",
     "models/text_encoders", "huggingface.co/comfyanonymous/flux_text_encoders"),
    ("ae.safetensors (335 MB)", "models/vae", "huggingface.co/black-forest-labs/FLUX.1-dev"),
    ("dreamo.safetensors, dreamo_cfg_distill.safetensors, v1.1/dreamo_sft_lora.safetensors, "
     "v1.1/dreamo_dpo_lora.safetensors", "models/dreamo (e.g. the repo cloned as models/dreamo/DreamO)",
     "huggingface.co/ByteDance/DreamO"),
    ("FLUX.1-Turbo-Alpha diffusion_pytorch_model.safetensors", "a folder with 'turbo' in its name under "
     "models/dreamo or models/loras", "huggingface.co/alimama-creative/FLUX.1-Turbo-Alpha"),
]
FACE_FILES = [("detection_Resnet50_Final.pth, parsing_bisenet.pth", "models/facexlib",
               "github.com/xinntao/facexlib releases")]
REMOVER_FILES = [("BEN2_Base.onnx (or a rembg model: birefnet-general.onnx, u2net.onnx ...)", "models/rembg",
                  "huggingface.co/PramaLLC/BEN2 (the remover the official demo uses)")]

COMMON_SETTINGS = [
    "steps 12 with the turbo LoRA on (25+ without it), sampler euler",
    "guidance 4.5 (DreamO v1.1; 3.5 for v1) on FluxGuidance",
    "true CFG off: KSampler cfg 1 (the cfg-distill LoRA replaces it), so the negative prompt is unused",
    "reference resolution 512 (raise to 768-1024 for fine detail such as text on a product)",
    "shift: ModelSamplingFlux set to the output size (DreamO's scheduler shifts by the token count, base 0.5, "
    "max 1.15): keep its width/height equal to the 'size' node's",
    "placeholders [ref#k] in the prompt name the reference in DreamO Apply's slot k",
]
IP = "ip: the subject is cut out by the background remover and pasted on white, as the official app does"
ID = ("id: the face nearest the centre is detected (RetinaFace resnet50), aligned to 512x512 and parsed (BiSeNet); "
      "only the face is kept. 'strict' stops with an error when no face is found (the official app silently "
      "falls back to ip)")
STYLE = ("style: the prompt starts with 'generate a same style image.' (the official style instruction); the "
         "reference keeps its background and is only resized")

NOTES = {
    "dreamo_ip": {
        "title": "subject (ip)",
        "what": "One object on a new background: the reference is cut out and pasted on white first. No remover? "
                "Set the preprocessor's background_remover to none and connect LoadImage's MASK through "
                "InvertMask to the encode node's mask input (or use a PNG with transparency).",
        "files": BASE_FILES + REMOVER_FILES, "settings": [IP, "output 1024x1024 (official default)"],
    },
    "dreamo_id": {
        "title": "identity (id), several prompts",
        "what": "One face, three prompts: every branch shares the models and the prepared face; add or remove "
                "branches freely (each needs its own DreamO Text Encode, DreamO Apply and sampler).",
        "files": BASE_FILES + FACE_FILES, "settings": [ID, "output 1024x1024 (official default)"],
    },
    "dreamo_id_tryon": {
        "title": "virtual try-on: a person wearing a garment",
        "what": "A face (id, slot 1) wearing a garment (ip, slot 2, background removed). For a second garment, "
                "copy the garment group, connect it to ref_3 on both DreamO nodes and name it [ref#3] in the prompt.",
        "files": BASE_FILES + FACE_FILES + REMOVER_FILES,
        "settings": [ID, IP, "output 768x1024 (portrait; the official app allows 768-1024 per side)"],
    },
    "dreamo_tryon": {
        "title": "virtual try-on: garments on a described person",
        "what": "Two garments (ip, backgrounds removed) worn by a person described in the prompt; no face "
                "reference. Official example: shirt.png + skirt.jpeg, 'A girl is wearing a short-sleeved shirt "
                "and a short skirt on the beach.'",
        "files": BASE_FILES + REMOVER_FILES,
        "settings": [IP, "output 768x1024 (portrait; the official app allows 768-1024 per side)"],
    },
    "dreamo_style": {
        "title": "style transfer",
        "what": "A style reference plus a content prompt. Official example: mountain.png with 'generate a same "
                "style image. A pavilion by the river, and the distant mountains are endless'.",
        "files": BASE_FILES, "settings": [STYLE, "output 1024x1024 (official default)"],
    },
    "dreamo_style_subject": {
        "title": "style + subject",
        "what": "A subject (ip, slot 1) drawn in the style of another picture (style, slot 2).",
        "files": BASE_FILES + REMOVER_FILES, "settings": [STYLE, IP, "output 1024x1024 (official default)"],
    },
    "dreamo_multi_subject": {
        "title": "several subjects with regions (routing)",
        "what": "Two subjects (ip) placed left and right: DreamO Routing limits the attention between each "
                "reference and the image to its region, drawn as a rectangle per slot on the node (drag to draw, "
                "move or resize; a MASK connected to region_k is used instead, stretched over the image). DreamO "
                "Routing Map saves where each reference went. Routing is not in the official "
                "app: DreamO trained it (the paper's routing constraint) and this pack applies it at inference.",
        "files": BASE_FILES,
        "settings": ["ip references as given (add a preprocessor with a remover to cut them out, as the "
                     "official app does)", "routing: hard, references isolated, all blocks, the whole sampling "
                     "range", "output 1024x1024 (official default)"],
    },
    "dreamo_regional": {
        "title": "regional prompts: each person where they stand, with their own words",
        "what": "Two people (id, slots 1 and 2) placed left and right, each region with its own words, and a "
                "prompt for the whole picture. Draw a box per slot on DreamO Routing and type the region's words "
                "in the field under it; they are appended to the positive conditioning and routed to the box "
                "inside attention, with the references: one model evaluation per step, however many regions "
                "(core's ConditioningSetMask + ConditioningCombine runs one per region). A region costs its "
                "words' T5 tokens + 1, no padding. An existing core regional workflow converts by inserting DreamO "
                "Regional Conditioning after ConditioningCombine. Regional prompts are not in the official app.",
        "files": BASE_FILES + FACE_FILES,
        "settings": [ID, "routing: hard, references isolated, all blocks, the whole sampling range; the base "
                     "prompt's [ref#k] follow their region", "output 1280x768 (landscape: two people side by "
                     "side)"],
    },
}


def note_text(name: str) -> str:
    note = NOTES[name]
    lines = [f"DreamO example: {note['title']}", "", note["what"], "", "MODEL FILES (name - folder - source)"]
    lines += [f"- {f} - {folder} - {src}" for f, folder, src in note["files"]]
    lines += ["Nothing is downloaded: a missing file is an error naming it.", "",
              f"SETTINGS (faithful to the official app: {SOURCE})"]
    lines += [f"- {s}" for s in note["settings"] + COMMON_SETTINGS]
    lines += ["", "Inputs an API client fills (node titles): ref k image, ref k encode, prompt, sampler, size, "
              "shift, output."]
    return "\n".join(lines)
