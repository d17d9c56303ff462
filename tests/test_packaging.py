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
    assert comfy["requires-comfyui"] == ">=0.3.57"
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
