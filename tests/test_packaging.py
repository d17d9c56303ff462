"""Packaging facts the Comfy Registry, ComfyUI-Manager and ComfyUI's loader rely on."""
import os
import shutil
import subprocess
import tomllib

import pytest

from dreamo_testkit import REPO


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
    for deps in [data["project"]["dependencies"], *data["project"]["optional-dependencies"].values()]:
        assert not any("git+" in d or "@" in d for d in deps)


def test_requirements_txt_matches_the_nodes_extra():
    """ComfyUI users install the nodes' packages with requirements.txt; pyproject's `nodes` extra is the same list
    (the doctor checks ComfyUI's Python against it, scripts/install_deps.sh installs it)."""
    listed = [l.strip() for l in open(os.path.join(REPO, "requirements.txt")) if l.strip() and not l.startswith("#")]
    assert listed == pyproject()["project"]["optional-dependencies"]["nodes"]


def test_package_imports_without_comfyui_and_exposes_the_web_directory():
    import comfyui_dreamo

    assert comfyui_dreamo.WEB_DIRECTORY == "./web"
    assert os.path.isfile(os.path.join(REPO, "web", "dreamo.js"))


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(REPO, "web")) if f.endswith(".js")))
def test_frontend_extension_is_valid_javascript(name):
    result = subprocess.run(["node", "--experimental-default-type=module", "--check",
                             os.path.join(REPO, "web", name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dreamo_ops_never_imports_comfyui():
    for package in ("dreamo_ops", "dreamo_cli"):
        folder = os.path.join(REPO, package)
        for name in os.listdir(folder):
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                assert "import comfy" not in text and "from comfy" not in text, f"{package}/{name}"
                assert "import folder_paths" not in text and "from folder_paths" not in text, f"{package}/{name}"
                if package == "dreamo_ops":
                    assert "folder_paths" not in text, name


def test_command_line_tools_are_console_scripts():
    data = pyproject()
    scripts = data["project"]["scripts"]
    assert scripts == {"dreamo-client": "dreamo_cli.client:main", "dreamo-doctor": "dreamo_cli.doctor:main",
                       "dreamo-download": "dreamo_cli.download:main"}
    assert set(data["tool"]["setuptools"]["packages"]) == {"dreamo_cli", "dreamo_ops", "dreamo_cli.workflows"}
    for target in scripts.values():
        module, func = target.split(":")
        assert f"def {func}(" in open(os.path.join(REPO, *module.split(".")) + ".py").read()


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
    for folder in ("scripts", ".ci", "dreamo_ops", "nodes", "tests", "dreamo_testkit", "bench", "workflows", "web"):
        for dirpath, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if name.endswith((".py", ".sh", ".json", ".js", ".md")) or folder == ".ci":
                    text = open(os.path.join(dirpath, name), errors="replace").read()
                    for private in ("/" + "work/", "/" + "root/"):  # split so this file does not name them
                        assert private not in text, f"{dirpath}/{name} names a machine path"


# ---- issue 18: the command-line tools install light, and a non-editable install has its workflows ------------

HEAVY = ("torch", "facexlib", "opencv", "numpy", "nvidia", "safetensors", "einops", "tokenizers", "pillow", "scipy")
LIGHT = {"requests", "websocket-client", "tqdm"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The pack's wheel, built offline (no build isolation, no dependencies) from a copy of what it packages, so
    the checkout gets no build/ or .egg-info."""
    import sys

    src = tmp_path_factory.mktemp("src") / "comfyui-dreamo"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), src / name)
    for folder in ("dreamo_cli", "dreamo_ops", "workflows"):
        shutil.copytree(os.path.join(REPO, folder), src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "No module named" in r.stderr and "setuptools" in r.stderr:
        pytest.skip(f"setuptools is not installed in {sys.executable}, which builds the wheel offline")
    assert r.returncode == 0, r.stdout + r.stderr
    (path,) = out.glob("*.whl")
    return str(path)


def _requires(wheel_path):
    """{extra or '': [requirement names]} from the wheel's METADATA."""
    import re
    import zipfile

    with zipfile.ZipFile(wheel_path) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    found: dict[str, list[str]] = {}
    for line in meta.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", req)
            name = re.match(r"[A-Za-z0-9._-]+", req).group(0).lower().replace("_", "-")
            found.setdefault(extra.group(1) if extra else "", []).append(name)
    return found


def test_the_client_installs_light(wheel):
    """`pip install .` and `.[client]` pulled torch, 14 nvidia packages, facexlib and opencv; they need only the
    client's three packages. The heavy ones are in the `doctor` and `nodes` extras."""
    requires = _requires(wheel)
    for extra in ("", "client"):
        assert set(requires[extra]) == LIGHT, (extra, requires[extra])
    assert "torch" in requires["nodes"] and "facexlib" in requires["nodes"] and "torch" in requires["doctor"]


@pytest.mark.skipif(os.environ.get("DREAMO_TEST_PYPI") != "1", reason="asks PyPI (set DREAMO_TEST_PYPI=1 to run it); "
                    "test_the_client_installs_light checks the same offline, from the wheel's metadata")
def test_pip_resolves_the_client_without_heavy_packages(wheel, tmp_path):
    """What pip itself would install for `.[client]` in a fresh environment (a dry run with a report)."""
    import json
    import sys

    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                        "--report", str(report), f"{wheel}[client]"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and any(w in r.stderr for w in ("NewConnectionError", "Could not find a version",
                                                         "No matching distribution", "Network is unreachable")):
        pytest.skip(f"PyPI cannot be reached from here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert LIGHT <= names and not [n for n in names if n.startswith(HEAVY)], sorted(names)


def _venv_with(wheel, tmp_path):
    """A venv that sees this Python's packages (nothing downloaded) with the wheel installed into it, not editable."""
    import sys
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    parents = [p for p in sys.path if p.endswith("site-packages")] or [sysconfig.get_paths()["purelib"]]
    with open(os.path.join(site, "_parent_site.pth"), "w") as f:  # after the venv's own site-packages
        f.write("\n".join(parents) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                        wheel], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "no such option: --python" in r.stderr:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                            site, wheel], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv, site


def test_a_non_editable_install_lists_and_finds_the_workflows(wheel, tmp_path):
    """A `pip install .` copy has no workflows/ folder beside it: the API workflows ship inside the package, so
    `dreamo-client --list-workflows` lists them and `dreamo-doctor --workflow ip` finds them by name."""
    from dreamo_testkit import install_tree as t

    venv, site = _venv_with(wheel, tmp_path)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import dreamo_cli; print(dreamo_cli.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site), f"the test imported {where}, not the installed copy"
    client = venv / "bin" / "dreamo-client"
    if not client.exists():  # pip --target installs no scripts
        client = None
    cmd = [str(client)] if client else [str(venv / "bin" / "python"), "-m", "dreamo_cli.client"]
    r = subprocess.run(cmd + ["--list-workflows"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    shipped = sorted(n[:-len("_api.json")].removeprefix("dreamo_") for n in os.listdir(os.path.join(REPO, "workflows",
                                                                                                      "api")))
    assert r.returncode == 0 and r.stdout.split() == shipped, r.stdout + r.stderr
    root = t.full_install(str(tmp_path / "ComfyUI"))
    doctor = [str(venv / "bin" / "dreamo-doctor")] if client else [str(venv / "bin" / "python"), "-m",
                                                                   "dreamo_cli.doctor"]
    r = subprocess.run(doctor + ["--comfyui", root, "--workflow", "ip", "--json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1) and json_ok(r.stdout), r.stdout + r.stderr


def json_ok(text):
    import json

    data = json.loads(text)
    return "error" not in data and len(data["files"]) >= 8


BLOCK = ("import sys\nfor m in {mods!r}: sys.modules[m] = None\nfrom dreamo_cli.{tool} import main\n"
         "sys.exit(main(sys.argv[1:]))\n")  # run a tool with these modules unimportable


def test_the_client_runs_without_any_heavy_package():
    import sys

    mods = ("torch", "numpy", "safetensors", "yaml", "packaging", "huggingface_hub", "cv2", "facexlib", "PIL",
            "einops", "tokenizers", "dreamo_ops")
    r = subprocess.run([sys.executable, "-c", BLOCK.format(mods=mods, tool="client"), "--list-workflows"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ip" in r.stdout.split(), r.stdout + r.stderr


def test_the_doctor_extra_is_enough_for_every_check_but_the_face_files(tmp_path):
    """The doctor run where only the `doctor` extra (and the light set) is importable checks a complete install
    (default preset: no face files) as OK: the extra lists what its checks import."""
    import sys

    from dreamo_testkit import install_tree as t

    root = t.full_install(str(tmp_path / "ComfyUI"))
    extra = {n.split(">")[0].split("=")[0] for n in pyproject()["project"]["optional-dependencies"]["doctor"]}
    blocked = tuple(m for m, pip in (("einops", "einops"), ("tokenizers", "tokenizers"), ("cv2", "opencv-python"),
                                     ("facexlib", "facexlib"), ("PIL", "pillow"), ("websocket", "websocket-client"))
                    if pip not in extra)
    r = subprocess.run([sys.executable, "-c", BLOCK.format(mods=blocked, tool="doctor"), "--comfyui", root],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_install_deps_installs_the_nodes_runtime():
    """scripts/install_deps.sh reads the pack's requirements from pyproject.toml: with the runtime in the `nodes`
    extra, its snippet must still list every package the nodes import (torch is installed separately)."""
    import re
    import sys

    script = open(os.path.join(REPO, "scripts", "install_deps.sh")).read()
    snippet = re.search(r"<<'PYEOF'\n(.*?)\nPYEOF", script, re.S).group(1)
    out = subprocess.run([sys.executable, "-", os.path.join(REPO, "pyproject.toml"), "0"], input=snippet,
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    nodes = pyproject()["project"]["optional-dependencies"]["nodes"]
    assert set(out) >= {n for n in nodes if not n.startswith("torch")} and "facexlib>=0.3.0" in out


def test_tests_share_code_through_conftest_and_the_kit_only():
    """No test module imports another (shared fixtures live in tests/conftest.py, shared helpers in
    dreamo_testkit/), and nothing outside tests/ imports from it."""
    import ast
    import glob

    offenders = []
    for path in sorted(glob.glob(os.path.join(REPO, "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, REPO)
        parts = set(rel.split(os.sep))
        if parts & {".git", ".venv", "venv", "build", "dist", "node_modules", "site-packages"}:
            continue  # not the clone's own code (a venv or build a user made inside it)
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), rel)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top == "tests" or top.startswith("test_") or top == "conftest":
                    offenders.append(f"{rel}:{node.lineno} imports {name}")
    assert not offenders, offenders
