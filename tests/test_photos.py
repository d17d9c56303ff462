"""The test photos have one lookup (dreamo_testkit/photos.py, DREAMO_REFS_DIR): a missing photo is a skip naming the variable
(a failure in CI), never a substitute, and the suite still collects without them."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from dreamo_testkit import photos

from dreamo_testkit import REPO


@pytest.fixture
def no_photos(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMO_REFS_DIR", str(tmp_path / "no_photos"))
    monkeypatch.delenv("DREAMO_REQUIRE_REFS", raising=False)
    return tmp_path


def python_files(*folders):
    for folder in folders:
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            yield from (os.path.join(root, f) for f in files if f.endswith(".py"))


def test_no_file_builds_its_own_path_to_the_photos():
    """Every test, kit module, script and bench finds the photos through dreamo_testkit/photos.py, which honours
    DREAMO_REFS_DIR."""
    own = re.compile(r'"shared",\s*"data"|shared/data/refs|environ(\.get\(|\[)\s*"DREAMO_REFS_DIR"|\bREFS\s*=')
    offenders = [os.path.relpath(p, REPO) for p in python_files("tests", "dreamo_testkit", "bench", "scripts")
                 if p not in (photos.__file__, __file__) and own.search(open(p, encoding="utf-8").read())]
    assert offenders == []


def test_a_missing_photo_is_a_skip_naming_the_variable(no_photos):
    with pytest.raises(pytest.skip.Exception) as skipped:
        photos.photo("perfume.png")
    assert "perfume.png" in str(skipped.value) and "DREAMO_REFS_DIR" in str(skipped.value)


def test_ci_turns_a_missing_photo_into_a_failure(no_photos, monkeypatch):
    monkeypatch.setenv("DREAMO_REQUIRE_REFS", "1")
    with pytest.raises(pytest.fail.Exception, match="DREAMO_REFS_DIR"):
        photos.require("hinton.jpeg")


def test_a_present_photo_is_found_where_the_variable_says(tmp_path, monkeypatch):
    (tmp_path / "cat.png").write_bytes(b"x")
    monkeypatch.setenv("DREAMO_REFS_DIR", str(tmp_path))
    assert photos.photo("cat.png") == str(tmp_path / "cat.png")


def test_a_test_server_never_substitutes_a_missing_photo(no_photos):
    """tiny_server used to save a red 300x300 picture under the photo's name; now the test is skipped, before any
    server or sandbox is made."""
    from dreamo_testkit import tiny_server

    root = no_photos / "server"
    with pytest.raises(pytest.skip.Exception, match="DREAMO_REFS_DIR"):
        tiny_server.start(str(root), {"reference.png": "perfume.png"})
    assert not root.exists()


def test_the_suite_collects_without_the_photos(no_photos):
    """A photo need at module level would break collection for everyone without the photos; each is met at test
    time instead (here with CI's DREAMO_REQUIRE_REFS=1, so a module-level need would be an error)."""
    env = dict(os.environ, DREAMO_REFS_DIR=str(no_photos / "no_photos"), DREAMO_REQUIRE_REFS="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "error" not in r.stdout.lower().split("\n")[-2], r.stdout[-1000:]


@pytest.mark.skipif(not os.path.isfile("/usr/bin/chromium"), reason="ci/run would install Chromium first")
def test_ci_requires_the_photos(tmp_path):
    """.ci/run stops with the fix when the photo folder is missing, and makes the suite require the photos."""
    repo = tmp_path / "clone"
    (repo / ".ci").mkdir(parents=True)
    (repo / "scripts").mkdir()
    shutil.copy(os.path.join(REPO, ".ci", "run"), repo / ".ci" / "run")
    (repo / "scripts" / "test.sh").write_text('echo "refs=$DREAMO_REFS_DIR require=$DREAMO_REQUIRE_REFS"\n')
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMO_")}
    env.update(COMFYUI_PATH=str(tmp_path / "old"), COMFYUI_LATEST_PATH=str(tmp_path / "new"))
    r = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"no folder {tmp_path}/shared/data/refs; set DREAMO_REFS_DIR" in r.stderr
    (tmp_path / "shared" / "data" / "refs").mkdir(parents=True)
    r = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"refs={tmp_path}/shared/data/refs require=1"
