"""The main job's choice between the real workflows and the install check."""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))


def touch(root, *parts):
    path = os.path.join(root, "models", *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


def test_missing_models_are_listed_and_found_in_subfolders(tmp_path, monkeypatch):
    import run_example

    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    assert len(run_example.missing_real_models("ip")) == len(run_example.REAL_MODELS)
    touch(tmp_path, "unet", "flux1-dev.safetensors")
    touch(tmp_path, "text_encoders", "clip_l.safetensors")
    touch(tmp_path, "text_encoders", "t5xxl_fp16.safetensors")
    touch(tmp_path, "vae", "ae.safetensors")
    touch(tmp_path, "dreamo", "DreamO", "dreamo.safetensors")
    touch(tmp_path, "dreamo", "DreamO", "dreamo_cfg_distill.safetensors")
    touch(tmp_path, "loras", "DreamO", "v1.1", "dreamo_sft_lora.safetensors")
    touch(tmp_path, "dreamo", "DreamO", "v1.1", "dreamo_dpo_lora.safetensors")
    assert run_example.missing_real_models("ip") == [
        "models/dreamo/<a FLUX.1-Turbo-Alpha folder>/diffusion_pytorch_model.safetensors"]
    touch(tmp_path, "loras", "FLUX.1-Turbo-Alpha", "diffusion_pytorch_model.safetensors")
    assert run_example.missing_real_models("ip") == []
    assert run_example.missing_real_models("id_tryon") == ["models/facexlib/detection_Resnet50_Final.pth",
                                                          "models/facexlib/parsing_bisenet.pth"]


def test_every_example_workflow_has_its_files_and_images():
    import run_example

    for name, images in run_example.WORKFLOW_IMAGES.items():
        workflow = json.load(open(os.path.join(REPO, "workflows", f"dreamo_{name}_api.json")))
        loaded = {n["inputs"]["image"] for n in workflow.values() if n["class_type"] == "LoadImage"}
        assert loaded == set(images)
        assert os.path.isfile(os.path.join(REPO, "workflows", f"dreamo_{name}.json"))
