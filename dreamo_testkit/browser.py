"""The real ComfyUI frontend in headless Debian Chromium, for the browser tests and scripts/export_ui_workflows.py.

One Chromium per test module (tests/conftest.py's `browser`); each `Page` is a new browser context, so it starts
with an empty profile (no local storage, no cookies) as a new browser would, without paying for a launch. What the
frontend keeps on the server (user settings) is shared: a page that changes a setting puts it back.
"""
from __future__ import annotations

import contextlib
import json
import os

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
READY = "() => window.app?.graph && window.app.extensions?.length > 0"


def launch(playwright):
    """Chromium with no network of its own (no updates, sync or QUIC) and no first-run page."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)


def post_setting(url: str, name: str, value, check: bool = True) -> None:
    """Set one of the frontend's user settings on the server (`check=False` when putting one back)."""
    import requests

    reply = requests.post(f"{url}/settings/{name}", json=value, timeout=10)
    assert reply.ok or not check, (name, reply.status_code, reply.text[:200])


class Page:
    """One frontend page on the server, collecting this pack's console errors."""

    def __init__(self, browser, server, viewport=(1600, 1000)):
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda e: self._error(f"{e}\n{getattr(e, 'stack', '')}"))
        self.page.on("console", lambda m: m.type == "error" and self._error(m.text))
        # no first-run template dialog over the canvas (on a busy machine it may open after the Escape below)
        post_setting(server.url, "Comfy.TutorialCompleted", True)
        self.page.goto(server.url, wait_until="domcontentloaded")
        self.page.wait_for_function(READY, timeout=60000)
        try:  # let the default graph load before ours replaces it (a blank default graph: 1.5 s, as always)
            self.page.wait_for_function("() => (app.graph._nodes ?? app.graph.nodes ?? []).length > 0", timeout=1500)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            pass
        self.page.wait_for_timeout(300)  # and what the frontend does after loading it
        self.page.keyboard.press("Escape")  # the first-run template dialog

    def _error(self, text):
        # Only errors from this pack count: the bare frontend logs a few of its own in a fresh profile.
        if "dreamo" in text.lower():
            self.errors.append(text)

    def js(self, script, arg=None):
        return self.page.evaluate(script, arg)

    def load_api(self, workflow):
        self.js("async (wf) => { await app.loadApiJson(wf, 'dreamo_frontend_test.json'); }", workflow)
        self.settle()

    def settle(self, ms=200):
        self.page.wait_for_timeout(ms)

    def inputs(self, node_id):
        """The node's input sockets (not widget inputs): name, plus '*' when connected."""
        return self.js("""(id) => app.graph.getNodeById(id).inputs.filter(i => !i.widget)
                                 .map(i => i.name + (i.link != null ? '*' : ''))""", node_id)

    def origins(self, node_id):
        return self.js("""(id) => { const n = app.graph.getNodeById(id); const out = {};
            for (const i of n.inputs) { if (i.link == null) continue;
              const l = app.graph.links.get?.(i.link) ?? app.graph.links[i.link];
              out[i.name] = [String(l.origin_id), l.origin_slot, n.inputs[l.target_slot]?.name]; }
            return out; }""", node_id)

    def prompt(self):
        return self.js("async () => (await app.graphToPrompt()).output")

    def client_pos(self, node_id, kind, name):
        """Screen position of a node's input/output socket (canvas coordinates through the canvas transform)."""
        return self.js("""([id, kind, name]) => {
            const n = app.graph.getNodeById(id);
            const slots = kind === 'input' ? n.inputs : n.outputs;
            const i = slots.findIndex(s => s.name === name);
            const p = kind === 'input' ? n.getInputPos(i) : n.getOutputPos(i);
            const o = app.canvas.ds.convertCanvasToOffset(p);
            const r = app.canvas.canvas.getBoundingClientRect();
            return [r.left + o[0], r.top + o[1]]; }""", [node_id, kind, name])

    def drag_link(self, from_id, output, to_id, input_name):
        x0, y0 = self.client_pos(from_id, "output", output)
        x1, y1 = self.client_pos(to_id, "input", input_name)
        mouse = self.page.mouse
        mouse.move(x0, y0)
        self.page.wait_for_timeout(100)
        mouse.down()
        self.page.wait_for_timeout(100)
        for step in range(1, 21):
            mouse.move(x0 + (x1 - x0) * step / 20, y0 + (y1 - y0) * step / 20)
            self.page.wait_for_timeout(20)
        mouse.up()
        self.settle()

    def show(self, node_ids, path, below=140):
        """Screenshot of the canvas around these nodes (and what is drawn under them), as it is on screen."""
        box = self.js("""(ids) => {
            app.canvas.setDirty(true, true);
            const r = app.canvas.canvas.getBoundingClientRect(), ds = app.canvas.ds, T = LiteGraph.NODE_TITLE_HEIGHT;
            const pts = ids.flatMap(id => { const n = app.graph.getNodeById(id);
              return [ds.convertCanvasToOffset([n.pos[0], n.pos[1] - T]),
                      ds.convertCanvasToOffset([n.pos[0] + n.size[0], n.pos[1] + n.size[1]])]; });
            return [r.left + Math.min(...pts.map(p => p[0])), r.top + Math.min(...pts.map(p => p[1])),
                    r.left + Math.max(...pts.map(p => p[0])), r.top + Math.max(...pts.map(p => p[1]))]; }""",
                      node_ids)
        self.settle(300)
        width, height = self.page.viewport_size["width"], self.page.viewport_size["height"]
        x0, y0 = max(0, box[0] - 20), max(0, box[1] - 40)
        x1, y1 = min(width, box[2] + 20), min(height, box[3] + below)
        self.page.screenshot(path=path, clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0})

    def close(self):
        self.context.close()


@contextlib.contextmanager
def page_without(browser, server, extensions, workflow):
    """A Page with `extensions` disabled (ComfyUI's own setting) and the saved UI `workflow` loaded; the
    extensions are enabled again afterwards."""
    post_setting(server.url, "Comfy.Extension.Disabled", extensions)
    try:
        bare = Page(browser, server)
        try:
            bare.js("async (wf) => { app.graph.clear(); await app.loadGraphData(wf); }", workflow)
            bare.settle()
            yield bare
        finally:
            bare.close()
    finally:
        post_setting(server.url, "Comfy.Extension.Disabled", [], check=False)


@contextlib.contextmanager
def vue_nodes_page(browser, server):
    """A Page with the Vue node renderer ("Nodes 2.0", a setting of frontend 1.49) on; skips on frontends without
    a usable one; the setting is turned off again afterwards."""
    import pytest

    setting = "Comfy.VueNodes.Enabled"
    probe = Page(browser, server)
    try:
        has_vue = probe.js("() => 'vueNodesMode' in LiteGraph")
        version = probe.js("() => window.__COMFYUI_FRONTEND_VERSION__ ?? '0'")
    finally:
        probe.close()
    if not has_vue:
        pytest.skip("this frontend has no Vue node renderer")
    if tuple(int(x) for x in version.split(".")[:2]) < (1, 49):
        # Measured on 1.27.10: after loadApiJson its Vue nodes still show the previous graph's node with the same
        # id, so there is no text box of ours to mark (the canvas renderer, tested above, works there).
        pytest.skip(f"the Vue node renderer of frontend {version} is an early preview")
    post_setting(server.url, setting, True)
    try:
        page = Page(browser, server)
        try:
            assert page.js("() => LiteGraph.vueNodesMode") is True
            yield page
            assert not page.errors, page.errors
        finally:
            page.close()
    finally:
        post_setting(server.url, setting, False, check=False)


def inside(page, node_id, locator):
    """The element is drawn inside the node's own element (Vue-nodes view)."""
    node = page.page.locator(f'[data-node-id="{node_id}"]').first.bounding_box()
    shown = locator.bounding_box()
    assert shown and shown["height"] > 5, shown
    assert node["x"] - 1 <= shown["x"] and shown["x"] + shown["width"] <= node["x"] + node["width"] + 1, (node, shown)
    assert node["y"] - 1 <= shown["y"] and shown["y"] + shown["height"] <= node["y"] + node["height"] + 1, (node, shown)


# The region editor of DreamO Routing (web/region_editor.js), driven with the mouse as a user does.

def client(page, node, px, py):
    """Screen position of preview pixel (px, py) of the region editor on node `node` (DreamO Routing)."""
    return page.js("""([id, px, py]) => { const e = app.graph.getNodeById(id).dreamoRegionEditor;
        const o = app.canvas.ds.convertCanvasToOffset(e.canvasPoint(px, py));
        const r = app.canvas.canvas.getBoundingClientRect(); return [r.left + o[0], r.top + o[1]]; }""", [node, px, py])


def drag(page, node, a, b, steps=12, hold=0):
    """Drag the mouse on the region editor of `node` from preview pixel a to b (holding still `hold` ms halfway,
    as a user who pauses)."""
    # draw the canvas now, so the DOM widgets below the editor (words, feedback) sit where the node is laid out
    # today: on a busy page they may still cover part of the preview from an earlier, shorter layout
    page.js("() => app.canvas.draw(true, true)")
    page.settle(300)
    x0, y0 = client(page, node, *a)
    x1, y1 = client(page, node, *b)
    mouse = page.page.mouse
    mouse.move(x0, y0)
    page.page.wait_for_timeout(50)
    mouse.down()
    page.page.wait_for_timeout(50)
    for i in range(1, steps + 1):
        mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
        page.page.wait_for_timeout(hold if hold and i == steps // 2 else 15)
    page.page.wait_for_timeout(150)  # a busy page handles the last move before the release
    # ... and the box the moves draw is stored live: wait until it stops changing (at most 3 s)
    last = None
    for _ in range(30):
        now = page.js("(id) => app.graph.getNodeById(id).widgets.find(w => w.name === 'drawn_regions').value", node)
        if now == last:
            break
        last = now
        page.page.wait_for_timeout(100)
    mouse.up()
    page.settle(150)


def click_button(page, node, label):
    """Click the editor's slot button (a number) or 'clear'. The click is made again (at most twice more) until it
    took: that slot is the chosen one, or, for 'clear', the chosen slot has no box. A busy page may draw the node
    once more between the position read here and the click, and a missed click is not what these tests are about
    (a 'clear' clicked again when it did take changes nothing)."""
    def took():
        if label != "clear":
            return page.js("(id) => app.graph.getNodeById(id).dreamoRegionEditor.active", node) == label
        active = str(page.js("(id) => app.graph.getNodeById(id).dreamoRegionEditor.active", node))
        return active not in ((stored(page, node) or {}).get("boxes") or {})

    for _ in range(3):
        page.js("() => app.canvas.draw(true, true)")  # the node where it is laid out now (see drag)
        x, y = page.js("""([id, label]) => { const n = app.graph.getNodeById(id), e = n.dreamoRegionEditor;
            const b = e.buttons().find(b => label === 'clear' ? b.clear : b.slot === label);
            const p = [n.pos[0] + b.x + b.w / 2, n.pos[1] + e.top + b.y + b.h / 2];
            const o = app.canvas.ds.convertCanvasToOffset(p); const r = app.canvas.canvas.getBoundingClientRect();
            return [r.left + o[0], r.top + o[1]]; }""", [node, label])
        page.page.mouse.click(x, y)
        page.settle(150)
        if took():
            return
    raise AssertionError(f"the editor's button {label} did not take the click")


def stored(page, node):
    """The region editor's stored value (DreamO Routing's drawn_regions), parsed; None when empty."""
    text = page.js("(id) => app.graph.getNodeById(id).widgets.find(w => w.name === 'drawn_regions').value", node)
    return json.loads(text) if text else None
