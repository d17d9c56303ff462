"""Packaging facts the Comfy Registry, ComfyUI-Manager and ComfyUI's loader rely on."""
import os
import shutil
import subprocess
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_registry_metadata():
    data = pyproject()
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and "Icon" in comfy
    from comfyui_dreamo.dreamo_ops.host_version import MIN_COMFYUI

    assert comfy["requires-comfyui"] == f">={MIN_COMFYUI}"
    assert data["project"]["license"] == {"file": "LICENSE"} and os.path.isfile(os.path.join(REPO, "LICENSE"))
    assert not any("git+" in d or "@" in d for d in data["project"]["dependencies"])


def test_requirements_txt_matches_pyproject():
    listed = [l.strip() for l in open(os.path.join(REPO, "requirements.txt")) if l.strip() and not l.startswith("#")]
    assert listed == pyproject()["project"]["dependencies"]


def test_package_imports_without_comfyui_and_exposes_the_web_directory():
    import comfyui_dreamo

    assert comfyui_dreamo.WEB_DIRECTORY == "./web"
    assert os.path.isfile(os.path.join(REPO, "web", "dreamo.js"))


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_frontend_extension_is_valid_javascript():
    result = subprocess.run(["node", "--experimental-default-type=module", "--check",
                             os.path.join(REPO, "web", "dreamo.js")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dreamo_ops_never_imports_comfyui():
    ops = os.path.join(REPO, "dreamo_ops")
    for name in os.listdir(ops):
        if name.endswith(".py"):
            text = open(os.path.join(ops, name)).read()
            assert "import comfy" not in text and "from comfy" not in text and "folder_paths" not in text, name


@pytest.mark.host
def test_readme_node_reference_lists_every_node_with_its_inputs():
    from comfyui_dreamo.nodes import NODES

    readme = open(os.path.join(REPO, "README.md")).read()
    for node in NODES:
        row = next((l for l in readme.splitlines() if f"**{node.DISPLAY_NAME}** (`{node.NODE_ID}`)" in l), None)
        assert row is not None, f"README's node table has no row for {node.NODE_ID}"
        inputs = node.INPUT_TYPES()
        for name in list(inputs["required"]) + list(inputs.get("optional", {})):
            if name.startswith(("ref_", "region_")) or name.endswith("_file") or name.endswith("_strength"):
                continue  # listed as groups (ref_1 … ref_9, region_1 … region_9, *_file, *_strength)
            assert f"`{name}`" in row, f"README's row for {node.NODE_ID} does not mention input '{name}'"


def test_root_init_imports_as_a_plain_module_too():
    """pytest (and other tools) import the root __init__.py as a top-level module when the clone folder is no
    Python identifier (the README's `comfyui-dreamo`); that must not fail on the relative imports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("__init__", os.path.join(REPO, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and module.WEB_DIRECTORY == "./web"


def test_no_pickle_is_ever_loaded_without_weights_only():
    """Every torch.load in the pack's code passes weights_only=True; nothing imports pickle to read files."""
    import re

    for folder in ("dreamo_ops", "nodes", "dreamo_cli"):
        root = os.path.join(REPO, folder)
        for dirpath, _, files in os.walk(root):
            for name in files:
                if not name.endswith(".py"):
                    continue
                text = open(os.path.join(dirpath, name)).read()
                for call in re.findall(r"torch\.load\([^)]*\)", text):
                    assert "weights_only=True" in call, f"{folder}/{name}: {call}"
                assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M), name


def test_install_script_clones_the_declared_floor_release():
    from comfyui_dreamo.dreamo_ops.host_version import MIN_COMFYUI

    script = open(os.path.join(REPO, "scripts", "install_deps.sh")).read()
    assert f'COMFYUI_FLOOR_TAG="v{MIN_COMFYUI}"' in script
    for folder in ("scripts", ".ci", "dreamo_ops", "nodes", "tests", "bench", "workflows", "web"):
        for dirpath, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if name.endswith((".py", ".sh", ".json", ".js", ".md")) or folder == ".ci":
                    text = open(os.path.join(dirpath, name), errors="replace").read()
                    for private in ("/" + "work/", "/" + "root/"):  # split so this file does not name them
                        assert private not in text, f"{dirpath}/{name} names a machine path"
