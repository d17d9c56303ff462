"""Make the UI-format workflow files (what users drag onto the canvas and share) from the API-format ones.

The conversion is done by the real ComfyUI frontend: each workflows/*_api.json is loaded into the page
(`app.loadApiJson`), laid out, and serialized (`app.graph.serialize()`) to workflows/<name>.json. Needs a
ComfyUI checkout (COMFYUI_PATH), Debian's Chromium and the `playwright` package. Run by hand after changing
an API workflow; tests/test_server_e2e.py checks that both formats give the same prompt.

    COMFYUI_PATH=~/comfyui python scripts/export_ui_workflows.py
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

from comfyui_runner import Sandbox, Server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def open_frontend(playwright, url: str):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.length > 0",
                           timeout=60000)
    return browser, page


def to_ui_format(page, api_workflow: dict, name: str) -> dict:
    return page.evaluate("""async ([wf, name]) => {
        await app.loadApiJson(wf, name);
        const titles = Object.fromEntries(Object.entries(wf).map(([id, n]) => [id, n._meta?.title]));
        for (const node of app.graph._nodes) {
            if (titles[node.id]) node.title = titles[node.id];
            for (const w of node.widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
        }
        return app.graph.serialize();
    }""", [api_workflow, name])


def main() -> int:
    from playwright.sync_api import sync_playwright

    sandbox = Sandbox(tempfile.mkdtemp(prefix="dreamo_export_"), isolated=True, test_nodes=True).prepare()
    with Server(sandbox) as server, sync_playwright() as p:
        browser, page = open_frontend(p, server.url)
        for api_path in sorted(glob.glob(os.path.join(REPO, "workflows", "*_api.json"))):
            ui = to_ui_format(page, json.load(open(api_path)), os.path.basename(api_path))
            out = api_path.replace("_api.json", ".json")
            with open(out, "w") as f:
                json.dump(ui, f, indent=1)
            print(f"wrote {os.path.relpath(out, REPO)} ({len(ui['nodes'])} nodes)")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
