"""The supported ComfyUI range: release strings, the guard on the nodes, and a real server on a too-old release."""
import json
import os
import shutil

import pytest

from dreamo_testkit import kit_workflow


@pytest.mark.parametrize("text,parsed", [("0.3.64", (0, 3, 64)), ("v0.33.0", (0, 33, 0)), ("0.4", (0, 4, 0)),
                                         ("0.3.57-rc1", (0, 3, 57)), ("", None), ("main", None)])
def test_release_strings_are_parsed(text, parsed):
    from comfyui_dreamo.dreamo_ops.host_version import parse_version

    assert parse_version(text) == parsed


@pytest.mark.parametrize("running,ok", [("0.3.56", False), ("0.3.63", False), ("0.3.64", True), ("0.3.100", True),
                                        ("0.33.0", True), ("1.0.0", True), (None, False)])
def test_supported_range(running, ok):
    from comfyui_dreamo.dreamo_ops.host_version import MIN_COMFYUI, unsupported_reason

    reason = unsupported_reason(running)
    assert (reason is None) == ok
    if not ok:
        assert MIN_COMFYUI in reason and (running is None or running in reason)


@pytest.mark.host
def test_on_an_old_release_every_node_loads_but_refuses_to_run():
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes import NODES
    from comfyui_dreamo.nodes.version_guard import guard

    assert guard(NODES, "0.33.0") == NODES  # the running checkouts are supported: nothing changes
    old = guard(NODES, "0.3.56")
    assert [n.NODE_ID for n in old] == [n.NODE_ID for n in NODES]
    for node, original in zip(old, NODES):
        assert node.INPUT_TYPES() == original.INPUT_TYPES() and node.RETURN_TYPES == original.RETURN_TYPES
        with pytest.raises(DreamOError, match=rf"^{node.NODE_ID} \(input 'ComfyUI version'\): this is ComfyUI 0\.3\.56; "
                                              r"DreamO needs ComfyUI 0\.3\.64 or newer\. Fix: update ComfyUI"):
            getattr(node(), node.FUNCTION)()


@pytest.mark.host
@pytest.mark.server
def test_install_check_fails_on_a_comfyui_that_reports_an_old_release(tmp_path, monkeypatch):
    """A copy of the real checkout whose comfyui_version.py says 0.3.56: the server starts, the pack loads, the
    install check is refused by the first DreamO node with the reason (not a silent non-DreamO picture)."""
    from dreamo_testkit import tiny_models
    from dreamo_testkit.comfyui_runner import Sandbox, Server, comfyui_path

    old = tmp_path / "comfyui-old"
    top_level_skip = {".venv", "models", "output", "input", "temp", "user", "custom_nodes", ".git"}
    shutil.copytree(comfyui_path(), old, symlinks=True, ignore=lambda d, names: [
        n for n in names if n == "__pycache__" or (os.path.samefile(d, comfyui_path()) and n in top_level_skip)])
    os.makedirs(old / "custom_nodes")
    (old / "comfyui_version.py").write_text('__version__ = "0.3.56"\n')
    monkeypatch.setenv("COMFYUI_PATH", str(old))
    sandbox = Sandbox(str(tmp_path / "sandbox"), isolated=True, test_nodes=True).prepare()
    os.makedirs(os.path.join(sandbox.models_dir, "dreamo"))
    tiny_models.write_dreamo_file(os.path.join(sandbox.models_dir, "dreamo", "dreamo_tiny.safetensors"))
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(os.path.join(sandbox.input_dir, "reference.png"))
    prompt = json.load(open(kit_workflow("dreamo_install_check_api.json")))
    with Server(sandbox) as server:
        result = server.run(prompt, timeout=300)
        log = open(server.log_path).read()
    assert result["status"] == "error", result["status"]
    assert result["error"]["node_type"].startswith("DreamO")
    assert ("(input 'ComfyUI version'): this is ComfyUI 0.3.56; DreamO needs ComfyUI 0.3.64 or newer. "
            "Fix: update ComfyUI") in result["error"]["exception_message"]
    assert "DreamO: this is ComfyUI 0.3.56" in log  # said at start-up too
