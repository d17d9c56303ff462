"""Test setup: the repo imports as the package `comfyui_dreamo`; host tests get a real ComfyUI checkout.

Host tests (marker `host`) need `COMFYUI_PATH` pointing at a ComfyUI checkout; without it they are skipped
with that reason printed in the summary. ComfyUI is put in CPU mode before any of it is imported.
"""
import os
import sys

import pytest

from dreamo_testkit import comfy_host  # noqa: E402

HOST_READY, HOST_SKIP_REASON = comfy_host.setup(), comfy_host.SKIP_REASON


# Every test server refuses and records connections that are not to loopback (dreamo_testkit/network_guard).
os.environ.setdefault("DREAMO_NETWORK_GUARD", "1")


def pytest_configure(config):
    if os.environ.get("DREAMO_REQUIRE_HOST") == "1" and not HOST_READY:
        pytest.exit(f"DREAMO_REQUIRE_HOST=1 but the ComfyUI tests would be skipped: {HOST_SKIP_REASON}", returncode=3)
    config.addinivalue_line("markers", "unit: no ComfyUI (set on every test that is not host, server or browser)")
    config.addinivalue_line("markers", "host: needs a real ComfyUI checkout in this process (COMFYUI_PATH)")
    config.addinivalue_line("markers", "server: talks to a real ComfyUI server on loopback")
    config.addinivalue_line("markers", "browser: drives the real frontend in Chromium (*_browser.py; also server)")
    config.addinivalue_line("markers", "photos(*names): the module's `server` needs these sample photos (a skip "
                            "naming DREAMO_REFS_DIR without them)")


TIERS = ("host", "server", "browser")


def pytest_collection_modifyitems(config, items):
    """Every test gets one visible tier: browser (the *_browser.py files, which are server tests too), server and
    host (the modules mark themselves), else unit. `-m "not server"` is the fast loop (no server, no browser)."""
    skip = None if HOST_READY else pytest.mark.skip(reason=HOST_SKIP_REASON)
    for item in items:
        if item.path.name.endswith("_browser.py"):
            for name in ("browser", "server", "host"):
                if name not in item.keywords:
                    item.add_marker(name)
        elif "server" in item.keywords and "host" not in item.keywords:
            item.add_marker("host")
        if not any(name in item.keywords for name in TIERS):
            item.add_marker("unit")
        elif skip is not None:
            item.add_marker(skip)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        heaviest_first(items)


def heaviest_first(items):
    """For parallel runs (scripts/test.sh: pytest-xdist, whole modules per worker, `--no-loadscope-reorder`): the
    modules that start browsers and servers first, the short unit modules last, where they fill the workers that
    finish early; the larger module first within a tier. A serial run keeps pytest's order."""
    rank = {"browser": 0, "server": 1, "host": 2, "unit": 3}
    modules = {}
    for item in items:
        tier = next(name for name in rank if name in item.keywords)
        count, best = modules.get(item.path, (0, 3))
        modules[item.path] = (count + 1, min(best, rank[tier]))
    items.sort(key=lambda item: (modules[item.path][1], -modules[item.path][0], str(item.path)))


@pytest.fixture(scope="session")
def session_server(tmp_path_factory):
    """One tiny ComfyUI server for the whole session, shared by the modules that only queue their own prompts and
    read back their own prompt ids (end to end, reliability, routing, regional, the example workflows, hostile
    input, the browser tests): dreamo_testkit/tiny_server.py's shared_sandbox. Modules whose sandbox must differ
    or whose point is isolation (bad files, the version guard, GGUF, the long queue, the client's lifecycle and
    kill tests, two servers side by side) start their own."""
    if not HOST_READY:
        pytest.skip(HOST_SKIP_REASON)
    from dreamo_testkit import tiny_server

    srv = tiny_server.start_shared(str(tmp_path_factory.mktemp("session_comfy")))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def flux():
    """The tiny Flux (seed 1) in a ModelPatcher, for one module (host tests)."""
    from dreamo_testkit import tiny_models

    return tiny_models.flux_patcher(seed=1)


@pytest.fixture(scope="module")
def dreamo():
    """DreamO's embeddings for the tiny Flux (seed 2), with the placeholder vectors."""
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings

    t = tiny_models.embedding_tensors(seed=2)
    return DreamOEmbeddings(task=t["dreamo_task_embedding.weight"], index=t["dreamo_idx_embedding.weight"],
                            placeholders=t["dreamo_t5_embedding.weight"][-10:])



@pytest.fixture
def folders(tmp_path):
    """Empty dreamo/ and loras/ model folders standing in for ComfyUI's (restored afterwards)."""
    with comfy_host.model_folders(tmp_path, extensions=(".safetensors", ".ckpt", ".pt")) as paths:
        yield paths


@pytest.fixture
def release(folders):
    """ByteDance/DreamO's files (+ turbo in loras/) as {stage: changes}; formats as released."""
    import folder_paths
    from dreamo_testkit import lora_fixtures as lf

    d, loras = folders["dreamo"], folders["loras"]
    (d / "v1.1").mkdir()
    (loras / "FLUX.1-Turbo-Alpha").mkdir()
    files = {"main": (d / "dreamo.safetensors", lf.xlabs(seed=1, sep="_")),
             "cfg_distill": (d / "dreamo_cfg_distill.safetensors", lf.xlabs(seed=2, sep=".")),
             "quality_pos": (d / "dreamo_quality_lora_pos.safetensors", lf.xlabs(seed=3, sep="_")),
             "quality_neg": (d / "dreamo_quality_lora_neg.safetensors", lf.xlabs(seed=4, sep="_")),
             "sft": (d / "v1.1" / "dreamo_sft_lora.safetensors", lf.diffusers(seed=5, full=False)),
             "dpo": (d / "v1.1" / "dreamo_dpo_lora.safetensors", lf.diffusers(seed=6, full=False)),
             "turbo": (loras / "FLUX.1-Turbo-Alpha" / "diffusion_pytorch_model.safetensors",
                       lf.diffusers(seed=7, full=True))}
    changes = {}
    for stage, (path, (tensors, ch)) in files.items():
        if stage == "main":
            tensors = lf.with_embeddings(tensors, seed=8)
        lf.save(path, tensors)
        changes[stage] = ch
    folder_paths.filename_list_cache.clear()
    return changes



@pytest.fixture(scope="module")
def server(request, session_server):
    """The server a server or browser module talks to: the session's shared one, unless the module defines its
    own `server`. A module marked `photos(*names)` (pytestmark) is skipped, naming DREAMO_REFS_DIR, without them:
    the shared sandbox has reference.png / reference2.png as the perfume and the cat only when the photos exist."""
    marker = request.node.get_closest_marker("photos")
    if marker is not None:
        from dreamo_testkit import photos

        photos.require(*marker.args)
    return session_server


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Where browser tests put their screenshots: $DREAMO_ARTIFACTS, else pytest's tmp folder (never the repo)."""
    folder = os.environ.get("DREAMO_ARTIFACTS") or str(tmp_path_factory.mktemp("artifacts"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def playwright():
    """Playwright's sync API for one module (started and stopped inside it: tests elsewhere may run asyncio)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    from dreamo_testkit.browser import CHROMIUM

    if not os.path.isfile(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    """One headless Chromium per module; each Page opens its own context (an empty profile)."""
    from dreamo_testkit.browser import launch

    b = launch(playwright)
    yield b
    b.close()


@pytest.fixture
def page(browser, server):
    """A frontend page on the module's `server`; fails the test on a console error of this pack."""
    from dreamo_testkit.browser import Page

    p = Page(browser, server)
    yield p
    p.close()
    assert not p.errors, p.errors


@pytest.fixture(scope="session", autouse=True)
def network_guard_report():
    """Fail the run when any test server tried to reach the network (no user option asks for it in tests). A
    fixture, not a session hook: its error is reported by each pytest-xdist worker as by a serial run."""
    yield
    runner = sys.modules.get("dreamo_testkit.comfyui_runner")
    logs = [p for p in getattr(runner, "NETWORK_LOGS", []) if os.path.isfile(p) and os.path.getsize(p) > 0]
    assert not logs, "A test ComfyUI server tried to reach the network:\n" + "\n".join(
        open(p).read()[:3000] for p in logs)
