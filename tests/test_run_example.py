"""The main job (scripts/run_example.py): its choice between real models and the install check, its argument
errors, and, in a real server, that it runs what it says (the chosen workflow's id and try-on paths on tiny
models), prints progress, leaves a clean server log and removes its sandbox unless --keep."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from dreamo_testkit import photos  # the one lookup of the sample photos

from dreamo_testkit import REPO


def touch(root, *parts):
    path = os.path.join(root, "models", *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


def test_missing_models_are_listed_and_found_in_subfolders(tmp_path, monkeypatch):
    import run_example

    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    assert len(run_example.missing_real_models("style")) == len(run_example.REAL_MODELS)
    touch(tmp_path, "unet", "flux1-dev.safetensors")
    touch(tmp_path, "text_encoders", "clip_l.safetensors")
    touch(tmp_path, "text_encoders", "t5xxl_fp16.safetensors")
    touch(tmp_path, "vae", "ae.safetensors")
    touch(tmp_path, "dreamo", "DreamO", "dreamo.safetensors")
    touch(tmp_path, "dreamo", "DreamO", "dreamo_cfg_distill.safetensors")
    touch(tmp_path, "loras", "DreamO", "v1.1", "dreamo_sft_lora.safetensors")
    touch(tmp_path, "dreamo", "DreamO", "v1.1", "dreamo_dpo_lora.safetensors")
    assert run_example.missing_real_models("style") == [
        "models/dreamo/<a FLUX.1-Turbo-Alpha folder>/diffusion_pytorch_model.safetensors"]
    touch(tmp_path, "loras", "FLUX.1-Turbo-Alpha", "diffusion_pytorch_model.safetensors")
    assert run_example.missing_real_models("style") == []
    assert run_example.missing_real_models("ip") == ["models/rembg/BEN2_Base.onnx"]
    assert run_example.missing_real_models("id") == ["models/facexlib/detection_Resnet50_Final.pth",
                                                     "models/facexlib/parsing_bisenet.pth"]
    assert len(run_example.missing_real_models("id_tryon")) == 3


def test_every_example_workflow_is_offered():
    import run_example

    names = run_example.workflows()
    assert {"ip", "id", "id_tryon", "tryon", "style", "style_subject"} <= set(names)
    for name in names:
        refs = run_example.references(run_example.load_workflow(name))
        assert [slot for slot, _, _ in refs] == list(range(1, len(refs) + 1)), name


@pytest.fixture
def fake_checkout(tmp_path, monkeypatch):
    (tmp_path / "main.py").write_text("")
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["--image", "no/such/picture.png"], "no such picture: no/such/picture.png"),
    (["--workflow", "style", "--garment", "x.png"], "--garment: this workflow has no garment"),
    (["--workflow", "ip", "--image", __file__, "--image", __file__], "2 pictures given, the workflow has 1"),
])
def test_bad_arguments_are_one_clear_line(fake_checkout, capsys, argv, message):
    import run_example

    assert run_example.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_comfyui_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import run_example

    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "nowhere"))
    assert run_example.main([]) == 2
    assert "no ComfyUI checkout" in capsys.readouterr().err


def test_a_missing_sample_face_says_where_the_samples_come_from(fake_checkout, monkeypatch, capsys, tmp_path):
    import run_example

    monkeypatch.setenv("DREAMO_REFS_DIR", str(tmp_path / "no_refs"))
    assert run_example.main(["--workflow", "id"]) == 2
    err = capsys.readouterr().err
    assert "ref 1 (id) needs a photo with a face: pass one with --image PATH" in err
    assert "hinton.jpeg, is one of DreamO's example photos (https://github.com/bytedance/DreamO" in err
    assert str(tmp_path / "no_refs") in err and str(fake_checkout / "input") in err and "DREAMO_REFS_DIR" in err


def test_without_the_sample_photos_a_drawn_subject_stands_in(fake_checkout, monkeypatch, tmp_path):
    import run_example

    monkeypatch.setenv("DREAMO_REFS_DIR", str(tmp_path / "no_refs"))
    prompt = run_example.load_workflow("style_subject")
    monkeypatch.setattr(run_example, "DRAWN", [])
    monkeypatch.setattr(run_example.tempfile, "tempdir", str(tmp_path))  # the drawn pictures' folders
    chosen = run_example.pictures(prompt, [], [], "style_subject")
    assert len(chosen) == 2 and all(os.path.isfile(p) and "drawn_" in p for p in chosen.values())
    assert all(os.path.dirname(p) in run_example.DRAWN for p in chosen.values())  # removed when the job ends


def test_samples_are_found_in_comfyuis_input_folder(fake_checkout, monkeypatch, tmp_path):
    import run_example

    monkeypatch.setenv("DREAMO_REFS_DIR", str(tmp_path / "no_refs"))
    (fake_checkout / "input").mkdir()
    (fake_checkout / "input" / "hinton.jpeg").write_bytes(b"a face")
    assert list(run_example.pictures(run_example.load_workflow("id"), [], [], "id").values()) == [
        str(fake_checkout / "input" / "hinton.jpeg")]


def slots(name, chosen):
    import run_example

    return {f"ref {slot} ({task})": chosen[node] for slot, task, node in run_example.references(
        run_example.load_workflow(name))}


def test_a_garment_goes_to_the_garment_slot(fake_checkout, monkeypatch, tmp_path):
    """`--workflow id_tryon --garment shirt.png` once put the shirt in the face slot (ref 1)."""
    import run_example

    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("woman1.png", "dress.png", "face.png", "shirt.png", "skirt.png"):
        (refs / name).write_bytes(b"picture")
    monkeypatch.setenv("DREAMO_REFS_DIR", str(refs))
    face, shirt, skirt = str(refs / "face.png"), str(refs / "shirt.png"), str(refs / "skirt.png")
    prompt = run_example.load_workflow("id_tryon")
    assert slots("id_tryon", run_example.pictures(prompt, [], [shirt], "id_tryon")) == {
        "ref 1 (id)": str(refs / "woman1.png"), "ref 2 (ip)": shirt}
    assert slots("id_tryon", run_example.pictures(prompt, [face], [shirt], "id_tryon")) == {
        "ref 1 (id)": face, "ref 2 (ip)": shirt}
    assert slots("tryon", run_example.pictures(run_example.load_workflow("tryon"), [], [shirt, skirt], "tryon")) == {
        "ref 1 (ip)": shirt, "ref 2 (ip)": skirt}
    with pytest.raises(run_example.UsageError, match="2 garments given, the workflow has 1 garment slot"):
        run_example.pictures(prompt, [], [shirt, skirt], "id_tryon")
    with pytest.raises(run_example.UsageError, match="2 pictures given, the workflow has 1 other reference"):
        run_example.pictures(prompt, [face, face], [shirt], "id_tryon")
    with pytest.raises(run_example.UsageError, match="--garment: this workflow has no garment"):
        run_example.pictures(run_example.load_workflow("ip"), [], [shirt], "ip")


@pytest.mark.host
@pytest.mark.server
def test_id_tryon_install_check_runs_the_id_and_tryon_paths(tmp_path, capsys):
    from dreamo_testkit import offline_retinaface
    import run_example

    ok, why = offline_retinaface.available()
    if not ok:
        pytest.skip(why)
    pytest.importorskip("rembg", reason="the ip path's remover needs rembg")
    photos.require("woman1.png", "dress.png")
    keep = tmp_path / "kept"
    assert run_example.main(["--workflow", "id_tryon", "--tiny", "--keep", str(keep), "--output",
                             str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "workflows/api/dreamo_id_tryon_api.json as an INSTALL CHECK" in out
    assert "ref 1 encode: id: " in out and "512x512" in out and "fell back" not in out
    assert "ref 2 encode: ip: background replaced with white using the built-in remover" in out
    assert "install check passed: workflows/api/dreamo_id_tryon_api.json (id, ip reference paths)" in out
    assert "running sampler" in out and "2/2" in out  # progress while sampling
    log = open(keep / "server.log").read()
    assert "Traceback" not in log and "DreamO" in log
    assert os.listdir(keep / "output")
    (saved,) = saved_paths(out)
    assert os.path.dirname(saved) == str(tmp_path / "out") and os.path.isfile(saved)


def saved_paths(out: str) -> list[str]:
    return [line.split("Saved ", 1)[1].split(" (noise")[0] for line in out.splitlines() if line.startswith("Saved ")]


@pytest.mark.host
@pytest.mark.server
def test_the_picture_is_kept_where_it_says_and_the_sandbox_is_removed(monkeypatch, capsys, tmp_path):
    import run_example
    from PIL import Image

    made = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(run_example.tempfile, "mkdtemp", lambda **kw: made.append(real(**kw)) or made[-1])
    monkeypatch.chdir(tmp_path)  # the default --output: ./dreamo_outputs
    (tmp_path / "dreamo_outputs").mkdir()
    (tmp_path / "dreamo_outputs" / "dreamo_style_00001_.png").write_bytes(b"a picture of an earlier run")
    assert run_example.main(["--workflow", "style", "--tiny"]) == 0
    out = capsys.readouterr().out
    assert "install check passed" in out
    sandboxes = [m for m in made if os.path.basename(m).startswith("dreamo_example_")]
    assert len(sandboxes) == 1 and not os.path.exists(sandboxes[0])
    (saved,) = saved_paths(out)
    assert os.path.dirname(saved) == str(tmp_path / "dreamo_outputs") and os.path.isfile(saved)  # outlives the sandbox
    assert Image.open(saved).size[0] > 0
    earlier = tmp_path / "dreamo_outputs" / "dreamo_style_00001_.png"
    assert saved != str(earlier) and earlier.read_bytes() == b"a picture of an earlier run"  # not overwritten


def child_servers(pid: int) -> list[int]:
    """The ComfyUI servers (python .../main.py) whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and any(arg.endswith(b"main.py") for arg in cmdline):
            found.append(int(entry))
    return found


def running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.host
@pytest.mark.server
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_stopped_main_job_ends_its_server_and_removes_its_temp_folders(tmp_path, sig, code):
    """Stopped while its ComfyUI server starts (the longest wait), the main job ends that server and removes its
    sandbox and drawn pictures: nothing is left in its temp folder, no server lives on with parent 1."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONUNBUFFERED="1", DREAMO_REFS_DIR=str(tmp_path / "no_refs"))
    # As started from a terminal: a suite run in the background (nohup, `&`) has SIGINT ignored, and a child
    # inherits that, so Ctrl-C would never reach the job (Python installs its KeyboardInterrupt only when not).
    job = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "run_example.py"), "--workflow",
                            "style_subject", "--tiny", "--output", str(tmp_path / "out")],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        servers = []
        while not servers and time.monotonic() < deadline and job.poll() is None:
            servers = child_servers(job.pid)
            time.sleep(0.1)
        assert servers, "the main job started no server"
        assert os.listdir(tmp), "the sandbox and drawn pictures are in TMPDIR while it runs"
        job.send_signal(sig)
        out, _ = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == code, out
    assert "Stopped by" in out and "Traceback" not in out, out
    deadline = time.monotonic() + 30
    while any(running(p) for p in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(running(p) for p in servers), "its ComfyUI server lives on"
    left = [e for e in os.listdir(tmp) if os.path.isdir(tmp / e) and not e.startswith("torchinductor_")]
    assert left == []  # no sandbox, no drawn pictures (torch's own compile cache may stay, as after any run)
