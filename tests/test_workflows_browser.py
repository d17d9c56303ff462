"""The example workflows in the real ComfyUI frontend (headless Chromium against a real server with only this pack):
each template opened by clicking it in the Templates dialog (under the category "DreamO", with its card title) and
by dropping the file on the canvas, with no alert, no missing-node dialog, no console error and every node on the
canvas; its UI file queues exactly its API twin; every node type exists in ComfyUI or the pack. Screenshots go to
$DREAMO_ARTIFACTS (else pytest's tmp dir)."""
import json
import os
from urllib.parse import quote

import pytest
from PIL import Image

from dreamo_testkit.template_files import API_FILES, UI_FILES, key_of, ui_path, write_menu_files

pytestmark = [pytest.mark.host, pytest.mark.server]

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
PACK = "comfyui_dreamo"  # the folder name the runner links the pack as: the template route's module name
CATEGORY = "DreamO"  # what the dialog calls it (locales/en/main.json)


def name_of(path):
    """The template's name: its card's title in the dialog (the API twin's name for an API file)."""
    return os.path.basename(path).removesuffix(".json").removesuffix("_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from dreamo_testkit.comfyui_runner import Sandbox, Server

    sandbox = Sandbox(str(tmp_path_factory.mktemp("comfy")), isolated=True).prepare()  # no test-only nodes
    write_menu_files(sandbox.models_dir)  # listed in the loaders' menus, never loaded
    for path in API_FILES:  # the files the LoadImage menus list: drawn, since nothing here runs or shows them
        for node in json.load(open(path)).values():
            if node["class_type"] == "LoadImage":
                target = os.path.join(sandbox.input_dir, node["inputs"]["image"])
                Image.new("RGB", (256, 256), (120, 130, 140)).save(target, format="PNG")
    srv = Server(sandbox).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(browser, server):
    """conftest.py's Chromium, after a new user's first page: it shows the first-run template browser (recorded
    in the server's user settings), met once here so each test opens the Templates dialog itself."""
    Page(browser, server.url).page.close()
    return browser


class Page:
    """A fresh frontend page that records what a user would see go wrong."""

    def __init__(self, browser, url):
        self.page = browser.new_page(viewport={"width": 1600, "height": 1000})
        self.errors = []
        self.recording = False
        self.page.on("pageerror", lambda e: self.recording and self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.recording and m.type == "error"
                     and self.errors.append(f"console error: {m.text}"))
        self.page.goto(url, wait_until="domcontentloaded")
        self.page.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.length > 0",
                                    timeout=60000)
        # Check workflows against the frontend's own schema as it loads them (the setting is on by default in
        # 1.27, off in 1.49: a user may turn it on, and a file that fails it is broken either way).
        self.page.evaluate("""async () => {
            const s = app.extensionManager?.setting;
            if (s?.set) await s.set('Comfy.Validation.Workflows', true);
            else await app.ui.settings.setSettingValueAsync('Comfy.Validation.Workflows', true); }""")
        self.page.wait_for_timeout(1500)
        self.dismiss()

    def dismiss(self):
        """Close whatever the first run shows (the template browser, toasts) before the workflow is opened."""
        for _ in range(3):
            self.page.keyboard.press("Escape")
        self.page.evaluate("() => document.querySelectorAll('.p-toast-close-button').forEach(b => b.click())")
        self.page.wait_for_timeout(300)

    def open_from_templates_dialog(self, name):
        """Open the Templates dialog (the frontend's own command), click the pack's category "DreamO", then the
        template's card, as a user does. Returns how it was opened."""
        for attempt in range(3):  # on a fresh profile the first-run dialog can swallow the first opening
            if attempt == 1:  # the sidebar's Templates button, as a user clicks it
                self.page.get_by_text("Templates", exact=True).first.click(timeout=10000)
            else:
                self.page.evaluate("async () => { await app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
            try:
                self.page.wait_for_selector('[data-testid="template-workflows-content"], .p-dialog', timeout=20000)
                break
            except Exception:  # noqa: BLE001 - playwright's TimeoutError
                if attempt == 2:
                    raise
                self.dismiss()
        self.page.get_by_text(CATEGORY, exact=True).first.click(timeout=20000)
        card = self.page.locator(f'[data-testid="template-workflow-{name}"]')
        if self.page.locator('[data-testid="template-workflows-content"]').count() == 0:  # the 1.27 dialog
            card = self.page.get_by_text(name, exact=True).first  # the card's title (its description repeats it)
        card.wait_for(timeout=30000)
        card.click()
        return "templates-dialog"

    def problems(self):
        """Alerts and toasts (the schema check's 'Invalid workflow' alert is one), open dialogs (missing nodes or
        models in 1.27), the error overlay (missing nodes, models or pictures in 1.49) and console errors since
        recording started."""
        shown = self.page.evaluate("""() => {
            const out = [];
            for (const t of document.querySelectorAll('.p-toast-message'))
                out.push('toast: ' + t.innerText.slice(0, 400));
            for (const e of document.querySelectorAll('[data-testid="error-overlay"]'))
                out.push('error overlay: ' + e.innerText.slice(0, 400));
            for (const d of document.querySelectorAll('.p-dialog, .comfy-modal[style*="block"]'))
                if (d.offsetParent !== null || getComputedStyle(d).display !== 'none')
                    out.push('dialog: ' + d.innerText.slice(0, 400));
            return out; }""")
        return shown + self.errors

    def graph(self):
        return self.page.evaluate("""() => app.graph._nodes.map(n => ({
            id: String(n.id), type: n.type, title: n.title,
            registered: !!LiteGraph.registered_node_types[n.type], errors: !!n.has_errors }))""")


def check_loaded(page, ui, how, artifacts, name):
    try:
        page.page.wait_for_function("(n) => app.graph._nodes.length === n", arg=len(ui["nodes"]), timeout=30000)
    except Exception:  # noqa: BLE001 - reported below with what is on the canvas
        pass
    page.page.wait_for_timeout(1500)
    page.page.screenshot(path=os.path.join(artifacts, f"{name}_{how}.png"))
    problems = page.problems()
    assert not problems, f"{name} opened by {how}: " + "\n".join(problems)
    nodes = page.graph()
    assert len(nodes) == len(ui["nodes"]), f"{name} opened by {how}: {len(nodes)} nodes on the canvas, file has " \
                                           f"{len(ui['nodes'])}"
    assert sorted(n["type"] for n in nodes) == sorted(n["type"] for n in ui["nodes"])
    assert all(n["registered"] and not n["errors"] for n in nodes), nodes


def test_templates_are_listed_with_thumbnails(server):
    import requests

    listed = requests.get(server.url + "/api/workflow_templates", timeout=30).json()
    assert sorted(listed.get(PACK, [])) == sorted(name_of(p) for p in UI_FILES)
    for path in UI_FILES:
        r = requests.get(f"{server.url}/api/workflow_templates/{PACK}/{quote(name_of(path))}.jpg", timeout=30)
        assert r.ok and r.headers["Content-Type"] == "image/jpeg"
    assert requests.get(server.url + "/i18n", timeout=30).json()["en"]["templateWorkflows"]["category"][PACK] == \
        CATEGORY


@pytest.mark.parametrize("path", UI_FILES, ids=name_of)
def test_template_opens_cleanly_from_the_templates_dialog(server, browser, artifacts, path):
    ui = json.load(open(path))
    page = Page(browser, server.url)
    try:
        page.recording = True
        opened_by = page.open_from_templates_dialog(name_of(path))
        check_loaded(page, ui, opened_by, artifacts, name_of(path))
    finally:
        page.page.close()


@pytest.mark.parametrize("path", UI_FILES, ids=name_of)
def test_template_opens_cleanly_when_dropped_on_the_canvas(server, browser, artifacts, path):
    ui = json.load(open(path))
    page = Page(browser, server.url)
    try:
        page.recording = True
        page.page.evaluate("""([text, file]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], file, { type: 'application/json' }));
            const canvas = document.querySelector('#graph-canvas') ?? document.body;
            canvas.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true,
                                                         clientX: 800, clientY: 500 })); }""",
                           [open(path).read(), os.path.basename(path)])
        check_loaded(page, ui, "drop", artifacts, name_of(path))
    finally:
        page.page.close()


@pytest.mark.parametrize("path", API_FILES, ids=name_of)
def test_ui_file_queues_exactly_its_api_twin(server, browser, path):
    """The template, as the real frontend converts it for queueing, is its API twin workflows/api/<key>_api.json."""
    ui = json.load(open(ui_path(key_of(path))))
    api = json.load(open(path))
    page = Page(browser, server.url)
    try:
        prompt = page.page.evaluate(
            "async (wf) => { await app.loadGraphData(wf); return (await app.graphToPrompt()).output; }", ui)
    finally:
        page.page.close()
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in api.items()}


def test_every_node_type_exists_in_comfyui_or_the_pack(server):
    import requests

    known = set(requests.get(server.url + "/object_info", timeout=60).json())
    for path in API_FILES:
        missing = {n["class_type"] for n in json.load(open(path)).values()} - known
        assert not missing, f"{os.path.basename(path)}: {missing}"
    for path in UI_FILES:
        missing = {n["type"] for n in json.load(open(path))["nodes"]} - known - FRONTEND_ONLY
        assert not missing, f"{os.path.basename(path)}: {missing}"
