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


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when any test server tried to reach the network (no user option asks for it in tests)."""
    runner = sys.modules.get("dreamo_testkit.comfyui_runner")
    logs = [p for p in getattr(runner, "NETWORK_LOGS", []) if os.path.isfile(p) and os.path.getsize(p) > 0]
    if logs:
        print("\nA test ComfyUI server tried to reach the network:\n" + "\n".join(open(p).read()[:3000] for p in logs))
        session.exitstatus = 1
