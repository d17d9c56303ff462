"""Each template as a user first meets it: opened the way the Templates dialog opens it, in a 1280×800 window of the
real frontend (headless Debian Chromium, real server), then run once on tiny models.

Before and after the run: the view is readable (scale ≥ 0.6, the frontend's text threshold), no two node rectangles
overlap, every node is in view, and nothing of this pack is drawn outside its node (what DreamO nodes draw on the
canvas is recorded while the frontend draws them; their DOM widgets must lie inside the node). The run is the
template's own API twin with tiny models (dreamo_testkit/tiny_workflows.py), queued for this page, so the page shows its
outputs as after a real run. Screenshots of each template before and after go to $DREAMO_ARTIFACTS (else pytest's
tmp folder)."""
import glob
import json
import os
import time

import pytest
import requests

from dreamo_testkit import REPO

pytestmark = [pytest.mark.host, pytest.mark.server]

API_FILES = sorted(glob.glob(os.path.join(REPO, "workflows", "api", "*_api.json")))
PACK = "comfyui_dreamo"  # the folder name the runner links the pack as: the template route's module name
WINDOW = {"width": 1280, "height": 800}
READABLE = 0.6  # below this scale the frontend draws nodes without their text


def key_of(path):
    return os.path.basename(path).removesuffix("_api.json")


@pytest.fixture(scope="module")
def server(session_server):
    """The session's shared tiny server (conftest.py): every example workflow's tiny model files, the loaders' menu
    files and the sample photos; each template needs its own pictures."""
    from dreamo_testkit import photos
    from dreamo_testkit import tiny_workflows

    photos.require(*sorted({name for p in API_FILES for name in tiny_workflows.input_images(json.load(open(p)))}))
    return session_server


# Node rectangles as the frontend computes them (title bar included), the visible canvas area, and what a DreamO
# node drew outside its rectangle (recorded by `RECORD_DRAWING`) or shows outside it in the DOM.
LAYOUT = """() => {
    app.canvas.setDirty(true, true);
    const ds = app.canvas.ds, c = app.canvas.canvas, T = LiteGraph.NODE_TITLE_HEIGHT;
    const rect = (n) => n.collapsed ? [...n.boundingRect] : [n.pos[0], n.pos[1] - T, n.size[0], n.size[1] + T];
    const nodes = app.graph._nodes.map(n => ({ id: n.id, type: n.type, title: n.title, r: rect(n) }));
    const overlaps = [];
    for (let i = 0; i < nodes.length; i++) for (let j = i + 1; j < nodes.length; j++) {
        const a = nodes[i].r, b = nodes[j].r;
        if (a[0] < b[0] + b[2] - 1 && b[0] < a[0] + a[2] - 1 && a[1] < b[1] + b[3] - 1 && b[1] < a[1] + a[3] - 1)
            overlaps.push(`${nodes[i].title} / ${nodes[j].title}`);
    }
    const view = [-ds.offset[0], -ds.offset[1], c.clientWidth / ds.scale, c.clientHeight / ds.scale];
    const outOfView = nodes.filter(({ r }) => r[0] < view[0] || r[1] < view[1] || r[0] + r[2] > view[0] + view[2]
                                              || r[1] + r[3] > view[1] + view[3]).map(n => n.title);
    const box = c.getBoundingClientRect();
    const domOutside = [];
    for (const n of app.graph._nodes) {
        if (!n.type?.startsWith("DreamO")) continue;
        const [x, y, w, h] = rect(n);
        const screen = (gx, gy) => [(gx + ds.offset[0]) * ds.scale, (gy + ds.offset[1]) * ds.scale];
        const p0 = screen(x, y), p1 = screen(x + w, y + h);
        for (const el of [n.dreamoFeedback?.element, n.dreamoPromptBox?.overlay]) {
            if (!el?.isConnected || !el.offsetParent) continue;
            const r = el.getBoundingClientRect();
            if (r.width === 0 || r.height === 0) continue;
            if (r.left < box.left + p0[0] - 2 || r.top < box.top + p0[1] - 2 || r.right > box.left + p1[0] + 2
                || r.bottom > box.top + p1[1] + 2) domOutside.push(`${n.title}: ${el.className}`);
        }
    }
    return { scale: ds.scale, overlaps, outOfView, domOutside, drawnOutside: window.dreamoDrawnOutside ?? null,
             sizes: Object.fromEntries(app.graph._nodes.map(n => [n.id, [Math.round(n.size[0]), Math.round(n.size[1])]])) };
}"""

# While the canvas draws a DreamO node's foreground and its canvas widgets, every shape, text and picture they draw
# is recorded in the node's own coordinates; anything beyond the node (title bar included) is kept.
RECORD_DRAWING = """() => {
    const outside = window.dreamoDrawnOutside = [];
    const T = LiteGraph.NODE_TITLE_HEIGHT, P = CanvasRenderingContext2D.prototype;
    let frame = null;
    const check = (ctx, pts) => {
        if (!frame || ctx !== frame.ctx) return;
        const m = ctx.getTransform(), n = frame.node;
        for (const [x, y] of pts) {
            const p = frame.inv.transformPoint(new DOMPoint(m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f));
            if (p.x < -2 || p.y < -T - 2 || p.x > n.size[0] + 2 || p.y > n.size[1] + 2)
                outside.push(`${n.title} (${frame.what}) at ${Math.round(p.x)},${Math.round(p.y)}`);
        }
    };
    const wrapShape = (name, points) => {
        const f = P[name];
        P[name] = function (...a) { check(this, points(this, ...a)); return f.apply(this, a); };
    };
    wrapShape("fillRect", (c, x, y, w, h) => [[x, y], [x + w, y + h]]);
    wrapShape("strokeRect", (c, x, y, w, h) => [[x, y], [x + w, y + h]]);
    wrapShape("rect", (c, x, y, w, h) => [[x, y], [x + w, y + h]]);
    wrapShape("arc", (c, x, y, r) => [[x - r, y - r], [x + r, y + r]]);
    wrapShape("moveTo", (c, x, y) => [[x, y]]);
    wrapShape("lineTo", (c, x, y) => [[x, y]]);
    wrapShape("drawImage", (c, img, ...a) => a.length >= 8 ? [[a[4], a[5]], [a[4] + a[6], a[5] + a[7]]]
        : a.length >= 4 ? [[a[0], a[1]], [a[0] + a[2], a[1] + a[3]]] : [[a[0], a[1]]]);
    wrapShape("fillText", (c, text, x, y, max) => {
        const w = Math.min(c.measureText(String(text)).width, max ?? Infinity);
        const x0 = c.textAlign === "center" ? x - w / 2 : c.textAlign === "right" || c.textAlign === "end" ? x - w : x;
        return [[x0, y], [x0 + w, y]];
    });
    const within = (node, what, f) => function (ctx, ...rest) {
        const saved = frame;
        frame = { node, ctx, what, inv: ctx.getTransform().inverse() };
        try { return f.call(this, ctx, ...rest); } finally { frame = saved; }
    };
    for (const n of app.graph._nodes) {
        if (!n.type?.startsWith("DreamO")) continue;
        if (n.onDrawForeground) n.onDrawForeground = within(n, "foreground", n.onDrawForeground);
        for (const w of n.widgets ?? []) {
            if (typeof w.draw === "function")
                w.draw = within(n, w.name, w.draw);
        }
    }
}"""


def layout(page):
    page.evaluate("() => app.canvas.setDirty(true, true)")
    page.wait_for_timeout(400)  # a few frames drawn with the recorder on
    return page.evaluate(LAYOUT)


def assert_readable(state, when):
    assert state["scale"] >= READABLE, f"{when}: opens at scale {state['scale']:.2f} in 1280×800"
    assert not state["overlaps"], f"{when}: overlapping nodes: {state['overlaps']}"
    assert not state["outOfView"], f"{when}: out of view: {state['outOfView']}"
    assert not state["domOutside"], f"{when}: shown outside its node: {state['domOutside']}"
    assert not state["drawnOutside"], f"{when}: drawn outside its node: {state['drawnOutside'][:5]}"


def queue_for_page(server, page, prompt, timeout=600):
    """Queue an API prompt for this page (its client id): the page shows the run's outputs as its own."""
    client_id = page.evaluate("() => (window.comfyAPI?.api?.api ?? app.api)?.clientId")
    res = requests.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=30)
    assert res.ok, res.text
    prompt_id = res.json()["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = requests.get(f"{server.url}/history/{prompt_id}", timeout=10).json().get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"the run did not finish within {timeout}s")


@pytest.mark.parametrize("path", API_FILES, ids=key_of)
def test_template_reads_well_before_and_after_one_run(server, browser, artifacts, path):
    from dreamo_testkit import tiny_workflows
    from workflow_notes import template_name

    key, name = key_of(path), template_name(key_of(path))
    page = browser.new_page(viewport=WINDOW)
    errors = []
    page.on("pageerror", lambda e: "dreamo" in f"{e}{getattr(e, 'stack', '')}".lower() and errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and "dreamo" in m.text.lower() and errors.append(m.text))
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_function("() => window.app?.graph && app.extensions?.length > 0", timeout=60000)
        page.wait_for_timeout(1500)
        page.keyboard.press("Escape")
        # What the Templates dialog does on a click (useTemplateWorkflows.loadWorkflowTemplate, both frontends).
        page.evaluate("""async ([pack, name]) => {
            const json = await fetch(`api/workflow_templates/${pack}/${encodeURIComponent(name)}.json`).then(r => r.json());
            await app.loadGraphData(json, true, true, name, { openSource: 'template' }); }""", [PACK, name])
        ui = json.load(open(os.path.join(REPO, "workflows", f"{name}.json")))
        page.wait_for_function("(n) => app.graph._nodes.length === n", arg=len(ui["nodes"]), timeout=120000)
        page.wait_for_timeout(1500)
        page.evaluate(RECORD_DRAWING)
        before = layout(page)
        page.screenshot(path=os.path.join(artifacts, f"{key}_1280x800_before_run.png"))
        assert_readable(before, f"{name} on open")

        prompt, _ = tiny_workflows.tiny_prompt(json.load(open(path)))
        for node in prompt.values():  # a VAE of this template's own: nothing comes from another template's cache
            if node["class_type"] == "DreamOTestTinyVAE":  # (0.3.x sends no UI for cached nodes it does not re-run)
                node["inputs"]["seed"] = 1000 + API_FILES.index(path)
        entry = queue_for_page(server, page, prompt)
        assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
        refs = [k for k, n in prompt.items() if n["class_type"] == "DreamORefEncode"]
        page.wait_for_function("""(ids) => ids.every(id => app.graph.getNodeById(+id)?.dreamoFeedback?.element
                                      .querySelectorAll('img').length > 0)""", arg=refs, timeout=120000)
        page.wait_for_timeout(1500)  # the pictures load and the nodes settle
        after = layout(page)
        page.screenshot(path=os.path.join(artifacts, f"{key}_1280x800_after_run.png"))
        assert after["scale"] == before["scale"]
        assert_readable(after, f"{name} after one run")
        assert not errors, errors
    finally:
        page.close()
