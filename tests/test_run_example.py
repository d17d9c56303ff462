"""The main job (scripts/run_example.py): its choice between real models and the install check, its argument
errors, and, in a real server, that it runs what it says (the chosen workflow's id and try-on paths on tiny
models), prints progress, leaves a clean server log and removes its sandbox unless --keep."""
import os
import sys
import tempfile

import pytest

import photos  # tests/: the one lookup of the sample photos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))


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


def test_a_missing_sample_face_asks_for_a_photo(fake_checkout, monkeypatch, capsys, tmp_path):
    import run_example

    monkeypatch.setattr(run_example, "SHARED_REFS", str(tmp_path / "no_refs"))
    assert run_example.main(["--workflow", "id"]) == 2
    err = capsys.readouterr().err
    assert "ref 1 (id) needs a photo with a face" in err and "--image PATH" in err


def test_without_the_sample_photos_a_drawn_subject_stands_in(monkeypatch, tmp_path):
    import run_example

    monkeypatch.setattr(run_example, "SHARED_REFS", str(tmp_path / "no_refs"))
    prompt = run_example.load_workflow("style_subject")
    chosen = run_example.pictures(prompt, [], [])
    assert len(chosen) == 2 and all(os.path.isfile(p) and "drawn_" in p for p in chosen.values())


@pytest.mark.host
@pytest.mark.server
def test_id_tryon_install_check_runs_the_id_and_tryon_paths(tmp_path, capsys):
    import offline_retinaface
    import run_example

    ok, why = offline_retinaface.available()
    if not ok:
        pytest.skip(why)
    pytest.importorskip("rembg", reason="the ip path's remover needs rembg")
    photos.require("woman1.png", "dress.png")
    keep = tmp_path / "kept"
    assert run_example.main(["--workflow", "id_tryon", "--tiny", "--keep", str(keep)]) == 0
    out = capsys.readouterr().out
    assert "workflows/api/dreamo_id_tryon_api.json as an INSTALL CHECK" in out
    assert "ref 1 encode: id: " in out and "512x512" in out and "fell back" not in out
    assert "ref 2 encode: ip: background replaced with white using the built-in remover" in out
    assert "install check passed: workflows/api/dreamo_id_tryon_api.json (id, ip reference paths)" in out
    assert "running sampler" in out and "2/2" in out  # progress while sampling
    log = open(keep / "server.log").read()
    assert "Traceback" not in log and "DreamO" in log
    assert os.listdir(keep / "output")


@pytest.mark.host
@pytest.mark.server
def test_the_sandbox_is_removed_without_keep(monkeypatch, capsys):
    import run_example

    made = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(run_example.tempfile, "mkdtemp", lambda **kw: made.append(real(**kw)) or made[-1])
    assert run_example.main(["--workflow", "style", "--tiny"]) == 0
    assert "install check passed" in capsys.readouterr().out
    assert len(made) == 1 and not os.path.exists(made[0])
