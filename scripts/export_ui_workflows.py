"""Make the UI-format example workflows (templates users open and share) from the API-format ones.

The conversion is done by the real ComfyUI frontend: each workflows/api/<name>_api.json is loaded into the page
(`app.loadApiJson`), its nodes are grouped and laid out, a Note node with the model files and the settings that
matter is added (text in scripts/workflow_notes.py), and the graph is serialized by the frontend itself
(`app.graph.serialize()`) to workflows/<name>.json. The template thumbnail workflows/<name>.jpg (the Templates
dialog shows /api/workflow_templates/<pack>/<name>.jpg) is drawn: the workflow's references and prompt.

Run by hand after changing an API workflow, with the NEWEST frontend the tests check (files it writes validate
against its workflow schema and the older one's); tests/test_workflow_files.py and tests/test_workflows_browser.py
check the results. Needs a ComfyUI checkout (COMFYUI_PATH), Chromium (CHROMIUM, default /usr/bin/chromium) and the
`playwright` package.

    COMFYUI_PATH=~/comfyui-0.33 python scripts/export_ui_workflows.py [name ...]   # e.g. dreamo_multi_subject
"""
from __future__ import annotations

import glob
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, REPO)  # the test kit (dreamo_testkit): its server runner

from dreamo_testkit.comfyui_runner import Sandbox, Server  # noqa: E402
from workflow_notes import NOTES, note_text  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
API_DIR = os.path.join(REPO, "workflows", "api")
UI_DIR = os.path.join(REPO, "workflows")
MODEL_LOADERS = {"UNETLoader", "VAELoader", "DualCLIPLoader", "CLIPLoader", "DreamOStageLoader", "ModelSamplingFlux",
                 "EmptySD3LatentImage", "EmptyLatentImage", "DreamOPreprocessorLoader", "CLIPTextEncode"}


def open_frontend(playwright, url: str, viewport=(1600, 1000)):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.length > 0",
                           timeout=60000)
    page.wait_for_timeout(1500)  # let the start-up workflow restore finish: it can replace a graph loaded earlier
    page.keyboard.press("Escape")
    return browser, page


def upstream(api: dict, node_id: str) -> set[str]:
    seen, todo = set(), [node_id]
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        todo += [str(v[0]) for v in api[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return seen


def layout_spec(api: dict) -> dict:
    """Groups (title, node ids) in reading order: models, one per reference, one per prompt -> image branch."""
    models = [k for k, n in api.items() if n["class_type"] in MODEL_LOADERS]
    refs = []
    for k, n in api.items():
        if n["class_type"] == "DreamORefEncode":
            title = n["_meta"]["title"]  # "ref 2 encode"
            slot = title.split()[1]
            image = str(n["inputs"]["image"][0])
            refs.append({"title": f"Reference {slot}: {n['inputs']['task']}", "nodes": [image, k]})
    taken = set(models) | {i for r in refs for i in r["nodes"]}
    branches = []
    for k, n in api.items():
        if n["class_type"] == "SaveImage":
            chain = [i for i in sorted(upstream(api, k), key=int) if i not in taken]
            taken |= set(chain)
            save = n["_meta"]["title"]
            title = "Prompt -> image" + save[len("output"):] if save.startswith("output") else save.capitalize()
            branches.append({"title": title, "nodes": chain})
    return {"models": {"title": "Models (FLUX.1-dev + DreamO)", "nodes": models}, "refs": refs, "branches": branches}


LAYOUT_JS = """async ([wf, name, spec, note]) => {
    await app.loadApiJson(wf, name);
    const byId = Object.fromEntries(app.graph._nodes.map(n => [String(n.id), n]));
    const lost = Object.keys(wf).filter(id => !byId[id]);
    if (lost.length) throw new Error(`nodes ${lost} of ${name} did not load (${app.graph._nodes.length} loaded)`);
    for (const [id, n] of Object.entries(wf)) {
        byId[id].title = n._meta.title;
        for (const w of byId[id].widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
        const want = { DreamOTextEncode: [420, 230], LoadImage: [300, 340] }[n.class_type] ?? [0, 0];
        const min = byId[id].computeSize();  // the size the frontend gives it on load (inputs + widgets)
        byId[id].size = [Math.max(want[0], min[0], byId[id].size[0]), Math.max(want[1], min[1], byId[id].size[1])];
    }
    const GAP = 30, TITLE = 34, PAD = 12;
    const groups = [];
    const group = (title, nodes, color) => {
        const xs = nodes.map(n => n.pos[0]), ys = nodes.map(n => n.pos[1] - 30);
        const x0 = Math.min(...xs) - PAD, y0 = Math.min(...ys) - TITLE - PAD;
        const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])) + PAD;
        const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1])) + PAD;
        const g = new LiteGraph.LGraphGroup(title);
        g.color = color;
        g.pos = [x0, y0]; g.size = [x1 - x0, y1 - y0];
        app.graph.add(g);
        return y1;
    };
    // the note, then the models column
    const noteNode = LiteGraph.createNode("Note");
    noteNode.title = "Read me: " + note.title;
    noteNode.widgets[0].value = note.text;
    noteNode.size = [460, 560];
    noteNode.pos = [40, 60];
    app.graph.add(noteNode);
    let y = noteNode.pos[1] + noteNode.size[1] + GAP + TITLE + 30;
    const models = spec.models.nodes.map(id => byId[id]);
    const modelTop = y;
    for (const n of models) { n.pos = [40, y]; y += n.size[1] + GAP + 30; }
    group(spec.models.title, models, "#335");
    // references
    let x = 560; y = 60 + TITLE + 30;
    for (const r of spec.refs) {
        const [img, enc] = r.nodes.map(id => byId[id]);
        img.pos = [x, y]; enc.pos = [x + img.size[0] + GAP, y];
        y = group(r.title, [img, enc], "#353") + GAP + TITLE + 30;
    }
    const refRight = Math.max(x + 700, ...spec.refs.flatMap(r => r.nodes.map(id => byId[id].pos[0] + byId[id].size[0])));
    // prompt -> image branches, one row each
    y = 60 + TITLE + 30;
    for (const b of spec.branches) {
        let bx = refRight + 80;
        const nodes = b.nodes.map(id => byId[id]);
        for (const n of nodes) { n.pos = [bx, y]; bx += n.size[0] + GAP; }
        y = group(b.title, nodes, "#533") + GAP + TITLE + 30;
    }
    app.graph.setDirtyCanvas(true, true);
    // as the frontend saves a file: JSON drops undefined fields (returned directly, they would become nulls,
    // which the frontend's workflow schema rejects)
    return JSON.parse(JSON.stringify(app.graph.serialize()));
}"""

def to_ui_format(page, api_workflow: dict, name: str) -> dict:
    key = name.removesuffix("_api.json")
    note = NOTES[key]
    args = [api_workflow, name, layout_spec(api_workflow), {"title": note["title"], "text": note_text(key)}]
    for attempt in range(3):
        try:
            return page.evaluate(LAYOUT_JS, args)
        except Exception as e:  # noqa: BLE001 - playwright's Error; a late start-up restore can clear the graph
            if "did not load" not in str(e) or attempt == 2:
                raise
            page.wait_for_timeout(2000)


TASK_COLOURS = {"id": (176, 82, 62), "ip": (52, 120, 170), "style": (120, 86, 160)}
TASK_WORDS = {"id": "a face", "ip": "a subject / garment", "style": "a style picture"}


def thumbnail(api: dict, title: str, path: str, size=(640, 400)) -> None:
    """The template's card picture: one tile per reference (slot, task, sample file name) and the prompt. Drawn,
    so no photo is copied into the repository."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    card = Image.new("RGB", size, (32, 34, 40))
    draw = ImageDraw.Draw(card)
    big, small = ImageFont.load_default(size=30), ImageFont.load_default(size=20)
    heading = f"DreamO: {title}"
    size_h = 30
    while draw.textlength(heading, font=ImageFont.load_default(size=size_h)) > size[0] - 40 and size_h > 14:
        size_h -= 1
    draw.text((20, 14), heading, fill=(240, 240, 240), font=ImageFont.load_default(size=size_h))
    refs = sorted((n["_meta"]["title"], n) for n in api.values() if n["class_type"] == "DreamORefEncode")
    tile = min(190, (size[0] - 40) // max(1, len(refs)) - 16)
    for i, (ref_title, node) in enumerate(refs):
        x, y = 20 + i * (tile + 16), 62
        picture = api[str(node["inputs"]["image"][0])]["inputs"]["image"]
        task = node["inputs"]["task"]
        draw.rounded_rectangle((x, y, x + tile, y + tile), 14, fill=TASK_COLOURS.get(task, (90, 90, 90)))
        slot = ref_title.split()[1]
        draw.text((x + 14, y + 12), f"[ref#{slot}]", fill=(255, 255, 255), font=big)
        draw.multiline_text((x + 14, y + 54), "\n".join(textwrap.wrap(TASK_WORDS.get(task, task), 14)),
                            fill=(255, 255, 255), font=small)
        draw.text((x + 14, y + tile - 30), picture, fill=(235, 235, 235), font=small)
        draw.text((x, y + tile + 6), f"{task} reference", fill=(250, 200, 90), font=small)
    prompts = [n["inputs"]["text"] for _, n in sorted(api.items(), key=lambda kv: int(kv[0]))
               if n["class_type"] == "DreamOTextEncode"]
    text = " | ".join(prompts)
    draw.multiline_text((20, 62 + tile + 36), "\n".join(textwrap.wrap(text, 52)[:3]), fill=(210, 210, 210),
                        font=small, spacing=6)
    card.save(path, quality=88)


def model_file_names(api_files) -> dict[str, set[str]]:
    """{models subfolder: file names} the workflows' loaders name, so their menus list them (empty files)."""
    folders = {"unet_name": "diffusion_models", "vae_name": "vae", "clip_name1": "text_encoders",
               "clip_name2": "text_encoders", "clip_name": "text_encoders", "background_remover": "rembg"}
    names: dict[str, set[str]] = {}
    for path in api_files:
        for node in json.load(open(path)).values():
            for key, value in node["inputs"].items():
                if key in folders and isinstance(value, str) and value != "none":
                    names.setdefault(folders[key], set()).add(value)
    return names


def main(names: list[str] | None = None) -> int:
    """Export every API workflow, or only those named (without _api.json)."""
    from playwright.sync_api import sync_playwright

    api_files = sorted(glob.glob(os.path.join(API_DIR, "*_api.json")))
    if names:
        unknown = set(names) - {os.path.basename(p).removesuffix("_api.json") for p in api_files}
        if unknown:
            print(f"no API workflow named {', '.join(sorted(unknown))} in {API_DIR}", file=sys.stderr)
            return 2
        api_files = [p for p in api_files if os.path.basename(p).removesuffix("_api.json") in names]
    sandbox = Sandbox(tempfile.mkdtemp(prefix="dreamo_export_"), isolated=True).prepare()
    for folder, names in model_file_names(api_files).items():
        os.makedirs(os.path.join(sandbox.models_dir, folder), exist_ok=True)
        for name in names:  # only listed by the loaders' menus, never loaded
            open(os.path.join(sandbox.models_dir, folder, name), "wb").close()
    from PIL import Image

    for api_path in api_files:  # blank stand-ins under the pictures' names, so LoadImage lists them
        for node in json.load(open(api_path)).values():
            if node["class_type"] == "LoadImage":
                Image.new("RGB", (64, 64), (128, 128, 128)).save(os.path.join(sandbox.input_dir,
                                                                              node["inputs"]["image"]), format="PNG")
    with Server(sandbox) as server, sync_playwright() as p:
        for api_path in api_files:
            browser, page = open_frontend(p, server.url, viewport=(1400, 1000))
            name = os.path.basename(api_path)
            ui = to_ui_format(page, json.load(open(api_path)), name)
            out = os.path.join(UI_DIR, name.replace("_api.json", ".json"))
            with open(out, "w") as f:
                json.dump(ui, f, indent=1)
                f.write("\n")
            thumbnail(json.load(open(api_path)), NOTES[name.removesuffix("_api.json")]["title"],
                      out.replace(".json", ".jpg"))
            browser.close()
            print(f"wrote {os.path.relpath(out, REPO)} ({len(ui['nodes'])} nodes) and its thumbnail")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
