"""The README's two commands choose their ComfyUI and Python as the README says (scripts/install_deps.sh):

- run from <ComfyUI>/custom_nodes/comfyui-dreamo they use that ComfyUI;
- with PYTHON a venv, the checkout's venv sees that venv's packages (torch is not downloaded again), and ComfyUI's
  own venv is used as it is;
- with no ComfyUI the main job asks nothing of the base Python, and a PEP 668 refusal stops the tests' setup with
  the fix.

The scripts run for real in temp folders, offline (PIP_NO_INDEX); a `python` shim stands in where pip must not run.
"""
import os
import shutil
import subprocess
import sys

import pytest

from dreamo_testkit import REPO

RELEASES = 'echo "RELEASES=$DREAMO_RELEASES"'


def bash(script: str, env: dict, cwd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def clean_env(tmp_path, **extra) -> dict:
    """No variable of the caller's setup leaks in; HOME is a temp folder whose ~/comfyui exists but is empty, so
    nothing is cloned and a wrong choice shows as 'no ComfyUI checkout'."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMFYUI", "DREAMO_", "VIRTUAL_ENV", "PIP_")) and k != "PYTHON"}
    home = tmp_path / "home"
    for empty in ("comfyui", "comfyui-latest", "ComfyUI-GGUF"):
        (home / empty).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), PIP_NO_INDEX="1", PYTHONDONTWRITEBYTECODE="1", **extra)  # nothing written in the repo
    return env


def comfyui_with_the_pack(tmp_path) -> tuple[str, str]:
    """A ComfyUI folder (what the scripts read of it) with a copy of the pack's scripts in custom_nodes/."""
    comfy = tmp_path / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    for name, text in (("main.py", ""), ("folder_paths.py", ""), ("requirements.txt", "numpy\n"),
                       ("comfyui_version.py", '__version__ = "0.3.99"\n')):
        (comfy / name).write_text(text)
    pack = comfy / "custom_nodes" / "comfyui-dreamo"
    for folder in ("scripts", "dreamo_cli"):
        shutil.copytree(os.path.join(REPO, folder), pack / folder)
    shutil.copy(os.path.join(REPO, "pyproject.toml"), pack)
    return str(comfy), str(pack)


def shim(tmp_path, pip_stderr: str = "", pip_ok: bool = False) -> tuple[str, str]:
    """A `python` that logs its arguments and runs them with the real one, except pip (which only prints
    `pip_stderr` and fails, or does nothing and succeeds with `pip_ok`) and pytest (logged, not run)."""
    log = tmp_path / "python_calls.log"
    path = tmp_path / "shim" / "python"
    path.parent.mkdir()
    path.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
case "$1 $2" in
  "-m pip") printf '%s\\n' {pip_stderr!r} >&2; exit {0 if pip_ok else 1} ;;
  "-m pytest") exit 0 ;;
esac
exec {sys.executable} "$@"
""")
    path.chmod(0o755)
    log.write_text("")
    return str(path), str(log)


def site_of(python: str, module: str) -> str:
    return subprocess.run([python, "-c", f"import {module}, os; print(os.path.dirname({module}.__file__))"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="needs the tests to run in a venv (PYTHON = that venv)")
def test_from_custom_nodes_it_uses_that_comfyui_and_the_given_venvs_packages(tmp_path):
    comfy, pack = comfyui_with_the_pack(tmp_path)
    env = clean_env(tmp_path, PYTHON=sys.executable)
    r = bash(f"DREAMO_ONE_CHECKOUT=1 source scripts/install_deps.sh && {RELEASES}", env, pack)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"RELEASES={comfy} {comfy}/.venv/bin/python 0.3.99" in r.stdout
    assert "installing torch" not in r.stdout  # the given venv's torch is seen, not downloaded again
    venv_python = f"{comfy}/.venv/bin/python"
    assert not os.path.exists(f"{comfy}/.venv/lib/python{sys.version_info.major}.{sys.version_info.minor}"
                              "/site-packages/torch")
    for module in ("torch", "rembg", "pytest"):  # from the base Python, the given venv, either
        assert site_of(venv_python, module) == site_of(sys.executable, module), module

    # Next time, without PYTHON: that venv is the checkout's own, used as it is (no second venv, nothing asked).
    del env["PYTHON"]
    again = bash(f"DREAMO_ONE_CHECKOUT=1 source scripts/install_deps.sh && {RELEASES}", env, pack)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"using ComfyUI's own Python {venv_python}" in again.stderr
    assert f"RELEASES={comfy} {venv_python} 0.3.99" in again.stdout
    assert "installing" not in again.stdout  # the requirements stamp is in that venv


def test_without_comfyui_the_main_job_asks_nothing_of_the_base_python(tmp_path):
    python, log = shim(tmp_path)
    env = clean_env(tmp_path, PYTHON=python, COMFYUI_PATH=str(tmp_path / "home" / "comfyui"))
    r = bash("bash scripts/run_example.sh", env, REPO)
    assert r.returncode == 1
    assert "The example needs ComfyUI" in r.stderr and "Nothing was installed" in r.stderr
    assert "-m pip" not in open(log).read()


def test_a_pep_668_refusal_stops_the_test_setup_with_the_fix(tmp_path):
    refusal = "error: externally-managed-environment\n\nThis environment is externally managed"
    python, log = shim(tmp_path, refusal)
    env = clean_env(tmp_path, PYTHON=python, COMFYUI_PATH=str(tmp_path / "home" / "comfyui"),
                    COMFYUI_GGUF_PATH=str(tmp_path / "home" / "ComfyUI-GGUF"))
    r = bash("bash scripts/test.sh", env, REPO)
    assert r.returncode == 1
    assert "Stopped: pip refused to install into" in r.stderr and "PEP 668" in r.stderr
    assert "python3 -m venv" in r.stderr and "PYTHON=" in r.stderr  # the fix
    calls = open(log).read()
    assert "-m pip install" in calls and "-m pytest" not in calls  # said first, then stopped: no test run
    assert "installing the pack's requirements there" in r.stdout and "=== tests" not in r.stdout


def test_the_tests_run_on_parallel_workers_unless_told_otherwise(tmp_path):
    python, log = shim(tmp_path, pip_ok=True)
    env = clean_env(tmp_path, PYTHON=python, COMFYUI_PATH=str(tmp_path / "home" / "comfyui"),
                    COMFYUI_GGUF_PATH=str(tmp_path / "home" / "ComfyUI-GGUF"))
    pytest_calls = []
    for workers, args in (("3", ""), ("3", " -p no:xdist tests/test_stages.py"), ("1", ""), ("", " -n 2")):
        open(log, "w").close()
        r = bash("bash scripts/test.sh" + args, dict(env, DREAMO_TEST_WORKERS=workers) if workers else env, REPO)
        assert "=== tests" in r.stdout, r.stdout + r.stderr
        pytest_calls += [line for line in open(log).read().splitlines() if line.startswith("-m pytest")]
    assert pytest_calls == ["-m pytest -n 3 --dist loadfile --no-loadscope-reorder -p no:benchmark",
                            "-m pytest -p no:xdist tests/test_stages.py", "-m pytest", "-m pytest -n 2"]


@pytest.mark.parametrize("workers", ["0", "two", "-1", "2 3"])
def test_a_bad_worker_count_stops_the_tests_before_anything_is_installed(tmp_path, workers):
    python, log = shim(tmp_path, pip_ok=True)
    env = clean_env(tmp_path, PYTHON=python, DREAMO_TEST_WORKERS=workers)
    r = bash("bash scripts/test.sh", env, REPO)
    assert r.returncode == 2
    assert "DREAMO_TEST_WORKERS must be a whole number of workers, 1 or more" in r.stderr
    assert f"(got '{workers}')" in r.stderr
    assert open(log).read() == ""  # no pip, no pytest
