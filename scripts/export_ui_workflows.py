"""Make the UI-format example workflows (templates users open and share) from the API-format ones.

The conversion is done by the real ComfyUI frontend: each workflows/api/<key>_api.json is loaded into the page
(`app.loadApiJson`), its nodes are sized and packed left to right in columns (the model chain, the references, the
prompt, sampling, outputs; see `layout_units` and LAYOUT_JS) so the template opens readable in a 1280×800 window
with room for what a run shows, a MarkdownNote with the files and settings that matter is added (text in
scripts/workflow_notes.py), and the graph is serialized by the frontend itself (`app.graph.serialize()`) to
workflows/<card title>.json (the Templates dialog shows the file name as the card's title). The template thumbnail
workflows/<card title>.jpg is drawn: the workflow's references and prompt.

Run by hand after changing an API workflow, with the NEWEST frontend the tests check (files it writes validate
against its workflow schema and the older one's); tests/test_workflow_files.py, tests/test_workflows_browser.py and
tests/test_templates_browser.py check the results. Needs a ComfyUI checkout (COMFYUI_PATH), Chromium (CHROMIUM,
default /usr/bin/chromium) and the `playwright` package.

    COMFYUI_PATH=~/comfyui-0.33 python scripts/export_ui_workflows.py [key ...]   # e.g. dreamo_multi_subject
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

from dreamo_testkit.browser import launch  # noqa: E402
from dreamo_testkit.comfyui_runner import Sandbox, Server  # noqa: E402
from dreamo_testkit.template_files import write_menu_files  # noqa: E402
from workflow_notes import note_text, template_name  # noqa: E402

API_DIR = os.path.join(REPO, "workflows", "api")
UI_DIR = os.path.join(REPO, "workflows")
def open_frontend(playwright, url: str, viewport=(1600, 1000)):
    browser = launch(playwright)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.length > 0",
                           timeout=60000)
    page.wait_for_timeout(1500)  # let the start-up workflow restore finish: it can replace a graph loaded earlier
    page.keyboard.press("Escape")
    return browser, page


# Where each node goes, left to right: the model chain, the references (picture → encode, side by side), the
# prompt, sampling, then the outputs and the note. Unlisted classes are outputs.
ROLES = ("models", "references", "prompt", "sampling", "output")
ROLE_OF = {
    "UNETLoader": "models", "CheckpointLoaderSimple": "models", "DreamOStageLoader": "models",
    "DreamOLoader": "models", "ModelSamplingFlux": "models", "EmptySD3LatentImage": "models",
    "EmptyLatentImage": "models",
    "VAELoader": "references", "DreamOPreprocessorLoader": "references", "LoadImage": "references",
    "DreamORefEncode": "references",
    "DualCLIPLoader": "prompt", "CLIPLoader": "prompt", "DreamOTextEncode": "prompt", "FluxGuidance": "prompt",
    "CLIPTextEncode": "prompt", "ConditioningZeroOut": "prompt",
    "DreamOApply": "sampling", "DreamORouting": "sampling", "KSampler": "sampling", "VAEDecode": "sampling",
}
GROUP_TITLES = {"models": "Models", "references": "References", "prompt": "Prompt", "sampling": "Sampling",
                "output": "Output"}
# Plumbing whose title says it all, collapsed to its title bar.
COLLAPSED = {"FluxGuidance", "VAEDecode", "CLIPTextEncode"}
# Width of each kind of node (a column takes its widest; never below what the node needs); unlisted: 240.
WIDTHS = {"DreamOTextEncode": 270, "DreamORouting": 270, "LoadImage": 210, "DreamORefEncode": 230,
          "SaveImage": 220, "DreamORoutingMap": 220, "MarkdownNote": 220}
# The most the nodes may span, so a template opens readable: ComfyUI's frontend fits a template to 75% of the
# window, and at 1280×800 a scale of 0.6 (its text threshold) then shows 1600×1000 (less 10 around the nodes).
MAX_WIDTH, MAX_HEIGHT = 1570, 970


def layout_units(api: dict) -> list[tuple[str, list[str]]]:
    """(role, node ids side by side) in reading order: each reference's picture beside its encode node, each
    prompt's text encode then its guidance, each sampler chain in order."""
    slot = {}
    for k, n in api.items():
        if n["class_type"] == "DreamOApply":
            for name, v in n["inputs"].items():
                if name.startswith("ref_") and isinstance(v, list):
                    slot.setdefault(str(v[0]), int(name[4:]))
    order = sorted(api, key=lambda k: (ROLES.index(ROLE_OF.get(api[k]["class_type"], "output")),
                                       slot.get(k, 0), int(k)))
    units, paired = [], set()
    for k in order:
        n = api[k]
        if k in paired:
            continue
        if n["class_type"] == "DreamORefEncode":
            image = str(n["inputs"]["image"][0])
            if api.get(image, {}).get("class_type") == "LoadImage":
                units.append(("references", [image, k]))
                paired |= {image, k}
                continue
        if n["class_type"] == "LoadImage" and any(
                m["class_type"] == "DreamORefEncode" and str(m["inputs"]["image"][0]) == k for m in api.values()):
            continue  # placed with its encode node
        units.append((ROLE_OF.get(n["class_type"], "output"), [k]))
    return units


LAYOUT_JS = """async ([wf, name, units, note, opts]) => {
    await app.loadApiJson(wf, name);
    const byId = Object.fromEntries(app.graph._nodes.map(n => [String(n.id), n]));
    const lost = Object.keys(wf).filter(id => !byId[id]);
    if (lost.length) throw new Error(`nodes ${lost} of ${name} did not load (${app.graph._nodes.length} loaded)`);
    const T = LiteGraph.NODE_TITLE_HEIGHT, GAP = 14, COL_GAP = 18, GROUP_TITLE = 34, PREVIEW = 224;
    const noteNode = LiteGraph.createNode("MarkdownNote");
    noteNode.title = "Read me";
    noteNode.widgets[0].value = note;
    app.graph.add(noteNode);
    units = [...units, ["output", [String(noteNode.id)]]];
    byId[String(noteNode.id)] = noteNode;
    for (const [id, n] of Object.entries(wf)) {
        byId[id].title = n._meta.title;
        for (const w of byId[id].widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
    }
    await new Promise(r => setTimeout(r, 300));  // let the extensions settle (growing sockets, hidden widgets)
    // Each node's size: its kind's width, the height its inputs and widgets take, plus room for the picture a run
    // shows (ComfyUI's preview needs 220) and a few lines of prompt; plumbing collapsed to its title bar.
    const size = (n) => {
        const preview = n.widgets?.find(w => w.name === "$$canvas-image-preview");
        if (preview) preview.hidden = true;
        const min = n.computeSize();
        if (preview) preview.hidden = false;
        const extra = ["LoadImage", "SaveImage", "PreviewImage", "DreamORoutingMap"].includes(n.type) ? PREVIEW
            : n.type === "DreamOTextEncode" ? 50 : n.type === "MarkdownNote" ? 150 : 0;
        return [Math.max(opts.widths[n.type] ?? 240, min[0]), min[1] + extra];
    };
    for (const n of Object.values(byId)) {
        n.size = size(n);
        const negative = n.type === "CLIPTextEncode" && !/^prompt/.test(n.title);
        if (opts.collapsed.includes(n.type) && (n.type !== "CLIPTextEncode" || negative)) n.collapse(true);
    }
    const rect = (n) => n.collapsed ? [n._collapsed_width ?? (n.title.length * 8 + 50), T] : [n.size[0], n.size[1] + T];
    const unitSize = (ids) => {
        const rs = ids.map(id => rect(byId[id]));
        return [rs.reduce((w, r) => w + r[0], 0) + GAP * (ids.length - 1), Math.max(...rs.map(r => r[1]))];
    };
    // Pack the units into columns top to bottom; a role may start a new column. Try every choice of where roles
    // start one and keep the narrowest layout that fits the height (ties: more roles on their own).
    // Too wide that way: the outputs (pictures first, then the map, then the note) may also sit at the foot of the
    // last column with room for them, when that saves a column.
    const FLOAT_ORDER = ["SaveImage", "PreviewImage", "DreamORoutingMap", "MarkdownNote"];
    const floats = (ids) => ids.length === 1 && FLOAT_ORDER.includes(byId[ids[0]].type);
    const withOutputsWhereRoom = (p) => {
        if (p.width <= opts.maxWidth) return p;
        const fixed = units.filter(([role, ids]) => !(role === "output" && floats(ids)));
        const floating = units.filter(([role, ids]) => role === "output" && floats(ids))
            .sort((a, b) => FLOAT_ORDER.indexOf(byId[a[1][0]].type) - FLOAT_ORDER.indexOf(byId[b[1][0]].type));
        const q = packUnits(fixed, p.breakSet);
        for (const [role, ids] of floating) {
            const [w, h] = unitSize(ids);
            let col = [...q.cols].reverse().find(c => c.h + GAP + h <= opts.maxHeight);
            if (!col) { col = { units: [], w: 0, h: -GAP, roles: [] }; q.cols.push(col); }
            col.units.push(ids); col.h += GAP + h; col.w = Math.max(col.w, w);
            if (!col.roles.includes(role)) col.roles.push(role);
        }
        const width = q.cols.reduce((s, c) => s + c.w, 0) + COL_GAP * (q.cols.length - 1);
        return width < p.width - 1 ? { ...q, width, height: Math.max(...q.cols.map(c => c.h)) } : p;
    };
    const pack = (breaks) => withOutputsWhereRoom(packUnits(units, breaks));
    const packUnits = (units, breaks) => {
        const cols = [];
        let col = null, prevRole = null;
        for (const [role, ids] of units) {
            const [w, h] = unitSize(ids);
            const newRole = role !== prevRole && prevRole !== null;
            if (!col || (newRole && breaks.has(role)) || col.h + GAP + h > opts.maxHeight) {
                col = { units: [], w: 0, h: -GAP, roles: [] };
                cols.push(col);
            }
            col.units.push(ids); col.w = Math.max(col.w, w); col.h += GAP + h;
            if (!col.roles.includes(role)) col.roles.push(role);
            prevRole = role;
        }
        const width = cols.reduce((s, c) => s + c.w, 0) + COL_GAP * (cols.length - 1);
        return { cols, width, height: Math.max(...cols.map(c => c.h)), breaks: breaks.size, breakSet: breaks };
    };
    const roles = [...new Set(units.map(u => u[0]))].slice(1);
    let best = null;
    for (let mask = 0; mask < (1 << roles.length); mask++) {
        const p = pack(new Set(roles.filter((_, i) => mask & (1 << i))));
        if (!best || p.width < best.width - 1 || (Math.abs(p.width - best.width) <= 1 && p.breaks > best.breaks)) best = p;
    }
    // Place: singles stretch to their column's width; groups name each column.
    let x = 0;
    for (const col of best.cols) {
        let y = T;
        for (const ids of col.units) {
            const [, h] = unitSize(ids);
            let ux = x;
            for (const id of ids) {
                const n = byId[id];
                if (ids.length > 1 && !n.collapsed) n.size[1] = h - T;  // side by side: one height, room for notes
                if (ids.length === 1 && !n.collapsed) n.size[0] = col.w;
                if (ids.length > 1 && id === ids[ids.length - 1] && !n.collapsed) n.size[0] = col.w - (ux - x);
                n.pos = [ux, y];
                ux += rect(n)[0] + GAP;
            }
            y += h + GAP;
        }
        const g = new LiteGraph.LGraphGroup(col.roles.map(r => opts.titles[r]).join(" · "));
        g.color = { models: "#335", references: "#353", prompt: "#553", sampling: "#533", output: "#444" }[col.roles[0]];
        g.pos = [x - 8, -GROUP_TITLE - 8];
        g.size = [col.w + 16, col.h + GROUP_TITLE + 16];
        app.graph.add(g);
        x += col.w + COL_GAP;
    }
    // The view a dropped file opens with (a template is always fitted): what fitting does in a 1280×800 window.
    const rects = app.graph._nodes.map(n => [n.pos[0], n.pos[1] - T, ...rect(n)]);
    const x0 = Math.min(...rects.map(r => r[0])) - 10, y0 = Math.min(...rects.map(r => r[1])) - 10;
    const x1 = Math.max(...rects.map(r => r[0] + r[2])) + 10, y1 = Math.max(...rects.map(r => r[1] + r[3])) + 10;
    const scale = 0.75 * Math.min(1280 / (x1 - x0), 800 / (y1 - y0));
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [-x0 - (x1 - x0) / 2 + 640 / scale, -y0 - (y1 - y0) / 2 + 400 / scale];
    app.graph.setDirtyCanvas(true, true);
    const out = JSON.parse(JSON.stringify(app.graph.serialize()));
    out.extra = { ...(out.extra ?? {}), ds: { scale, offset: [...app.canvas.ds.offset] } };
    return { workflow: out, width: x1 - x0, height: y1 - y0, scale };
}"""


def to_ui_format(page, api_workflow: dict, name: str) -> dict:
    key = name.removesuffix("_api.json")
    opts = {"widths": WIDTHS, "collapsed": sorted(COLLAPSED), "titles": GROUP_TITLES, "maxHeight": MAX_HEIGHT,
            "maxWidth": MAX_WIDTH}
    args = [api_workflow, template_name(key), layout_units(api_workflow), note_text(key), opts]
    for attempt in range(3):
        try:
            result = page.evaluate(LAYOUT_JS, args)
            break
        except Exception as e:  # noqa: BLE001 - playwright's Error; a late start-up restore can clear the graph
            if "did not load" not in str(e) or attempt == 2:
                raise
            page.wait_for_timeout(2000)
    if result["scale"] < 0.6:
        print(f"warning: {key} spans {result['width']:.0f}×{result['height']:.0f}: it opens at "
              f"{result['scale']:.2f} in 1280×800, below 0.6", file=sys.stderr)
    return result["workflow"]


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
    heading = title
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
    write_menu_files(sandbox.models_dir, api_files)  # only listed by the loaders' menus, never loaded
    from PIL import Image

    for api_path in api_files:  # blank stand-ins under the pictures' names, so LoadImage lists them
        for node in json.load(open(api_path)).values():
            if node["class_type"] == "LoadImage":
                Image.new("RGB", (64, 64), (128, 128, 128)).save(os.path.join(sandbox.input_dir,
                                                                              node["inputs"]["image"]), format="PNG")
    with Server(sandbox) as server, sync_playwright() as p:
        for api_path in api_files:
            browser, page = open_frontend(p, server.url, viewport=(1280, 800))
            name = os.path.basename(api_path)
            key = name.removesuffix("_api.json")
            ui = to_ui_format(page, json.load(open(api_path)), name)
            out = os.path.join(UI_DIR, f"{template_name(key)}.json")
            for old in glob.glob(os.path.join(UI_DIR, f"{key}.*")):  # the file's name before it was the card's title
                os.remove(old)
            with open(out, "w") as f:
                json.dump(ui, f, indent=1)
                f.write("\n")
            thumbnail(json.load(open(api_path)), template_name(key), out.replace(".json", ".jpg"))
            browser.close()
            print(f"wrote {os.path.relpath(out, REPO)} ({len(ui['nodes'])} nodes) and its thumbnail")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
