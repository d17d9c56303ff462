"""dreamo-doctor on ComfyUI-like trees: present, missing, misplaced, corrupted, wrong-model and wrong-version
files give the right report and exit code; extra_model_paths.yaml folders are searched."""
import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout

import pytest

from dreamo_testkit import install_tree as t
from dreamo_testkit import template_files
from dreamo_cli import diagnosis, doctor, tool_target

REPO = t.REPO


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = doctor.main(list(argv))
    return code, out.getvalue() + err.getvalue()


def report(root, *argv):
    code, text = run("--comfyui", str(root), "--json", *argv)
    data = json.loads(text)
    return code, data, {f["label"]: f for f in data.get("files", [])}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return t.full_install(str(tmp_path_factory.mktemp("comfy") / "ComfyUI"))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "ComfyUI"
    t.full_install(str(root))  # fresh each time (a copy would fill the sparse files)
    return root


def test_complete_install_passes_and_prints_what_each_file_is(installed):
    code, text = run("--comfyui", installed)
    assert code == 0, text
    assert "Result: OK" in text
    assert "FLUX.1-dev, bf16, 19 double + 38 single blocks" in text
    assert "T5-XXL, fp16, 24 blocks" in text and "CLIP-L, fp16, 12 layers" in text
    assert "10 placeholder vectors" in text and "FLUX.1 LoRA (diffusers)" in text
    code, data, files = report(installed)
    assert code == 0 and data["ok"] and data["comfyui"]["version"] == "0.3.64"
    assert all(f["status"] == "ok" for f in files.values()) and len(files) == 9
    assert files["DreamO sft stage"]["path"].endswith(os.path.join("dreamo", "v1.1", "dreamo_sft_lora.safetensors"))


def test_missing_files_say_where_they_go_and_where_they_come_from(tree):
    os.remove(t.model(tree, "text_encoders/t5xxl_fp16.safetensors"))
    os.remove(t.model(tree, "dreamo/v1.1/dreamo_dpo_lora.safetensors"))
    code, data, files = report(tree)
    assert code == 1 and not data["ok"]
    t5 = files["T5-XXL text encoder"]
    assert t5["status"] == "missing" and t5["target"] == t.model(tree, "text_encoders/t5xxl_fp16.safetensors")
    assert t5["source"]["repo"] == "comfyanonymous/flux_text_encoders"
    dpo = files["DreamO dpo stage"]
    # next to the main file, in the Hugging Face repo's own layout, where the stage loader's 'auto' finds it
    assert dpo["status"] == "missing" and dpo["target"] == t.model(tree, "dreamo/v1.1/dreamo_dpo_lora.safetensors")
    assert [f["status"] for f in files.values()].count("missing") == 2
    code, text = run("--comfyui", str(tree))
    assert "Result: 2 problem(s)" in text and f"`python -m dreamo_cli.download --comfyui {tree}` fetches the 2" in text


def test_v1_preset_needs_the_quality_pair_and_no_turbo_drops_turbo(installed):
    code, data, files = report(installed, "--preset", "v1", "--no-turbo")
    assert code == 1
    assert files["DreamO quality pos stage"]["status"] == "missing"
    assert files["DreamO quality neg stage"]["status"] == "missing"
    assert "FLUX.1-Turbo-Alpha LoRA" not in files and "DreamO sft stage" not in files


def test_misplaced_file_is_found_and_the_move_named(tree):
    os.makedirs(t.model(tree, "loras"))
    os.rename(t.model(tree, "diffusion_models/flux1-dev.safetensors"), t.model(tree, "loras/flux1-dev.safetensors"))
    code, data, files = report(tree)
    flux = files["FLUX.1-dev diffusion model"]
    assert code == 1 and flux["status"] == "misplaced"
    assert flux["path"] == t.model(tree, "loras/flux1-dev.safetensors")
    assert flux["target"] == t.model(tree, "diffusion_models/flux1-dev.safetensors")
    _, text = run("--comfyui", str(tree))
    assert "fix: move it to models/diffusion_models/flux1-dev.safetensors" in text


@pytest.mark.parametrize("rel, tensors, label, words", [
    ("diffusion_models/flux1-dev.safetensors", t.sdxl_unet(), "FLUX.1-dev diffusion model", "SD1.x/SDXL UNet"),
    ("diffusion_models/flux1-dev.safetensors", t.flux_dev(guidance=False), "FLUX.1-dev diffusion model",
     "FLUX.1-schnell"),
    ("diffusion_models/flux1-dev.safetensors", t.flux_dev(hidden=1024, double=4, single=8),
     "FLUX.1-dev diffusion model", "another size"),
    ("text_encoders/clip_l.safetensors", t.clip_text(width=1280, layers=32), "CLIP-L text encoder", "CLIP-G"),
    ("text_encoders/clip_l.safetensors", t.t5xxl(), "CLIP-L text encoder", "is T5-XXL, not CLIP-L"),
    ("text_encoders/t5xxl_fp16.safetensors", t.t5xxl(vocab=256384), "T5-XXL text encoder", "UMT5"),
    ("vae/ae.safetensors", t.vae(channels=4), "FLUX.1 VAE", "SD1.x/SDXL VAE"),
    ("dreamo/dreamo_cfg_distill.safetensors", {**t.xlabs_lora(), "lora_te1_text_model.x.lora_up.weight": ((8, 4), "F16"),
                                               "lora_te1_text_model.x.lora_down.weight": ((4, 8), "F16")},
     "DreamO cfg distill stage", "lora_te1_text_model.x.lora_down.weight"),
    ("dreamo/dreamo_cfg_distill.safetensors", t.xlabs_lora(hidden=2048), "DreamO cfg distill stage",
     "does not fit this model"),
    ("dreamo/dreamo.safetensors", {**t.xlabs_lora(), "dreamo_task_embedding.weight": ((2, 2048), "F32"),
                                   "dreamo_idx_embedding.weight": ((10, 2048), "F32")},
     "DreamO main stage", "2048 wide"),
])
def test_wrong_model_is_reported_by_name(tree, rel, tensors, label, words):
    t.write_header_file(t.model(tree, rel), tensors)
    code, data, files = report(tree)
    assert code == 1
    f = files[label]
    assert f["status"] == "bad", f
    assert words in f["detail"] and os.path.basename(rel) in f["detail"]
    assert sum(x["status"] != "ok" for x in files.values()) == 1


def test_truncated_file_is_reported_corrupted(tree):
    t.write_header_file(t.model(tree, "text_encoders/t5xxl_fp16.safetensors"), t.t5xxl(), cut=1000)
    code, data, files = report(tree)
    t5 = files["T5-XXL text encoder"]
    assert code == 1 and t5["status"] == "bad" and "truncated or corrupted" in t5["detail"]
    with open(t.model(tree, "vae/ae.safetensors"), "wb") as f:
        f.write(b"<html>not a model</html>")
    _, _, files = report(tree)
    assert files["FLUX.1 VAE"]["status"] == "bad" and "ae.safetensors" in files["FLUX.1 VAE"]["detail"]


def test_fp8_and_gguf_variants_are_accepted(tree):
    os.remove(t.model(tree, "diffusion_models/flux1-dev.safetensors"))
    os.remove(t.model(tree, "text_encoders/t5xxl_fp16.safetensors"))
    t.write_header_file(t.model(tree, "diffusion_models/flux1-dev-fp8-e4m3fn.safetensors"), t.flux_dev("F8_E4M3"))
    t.write_header_file(t.model(tree, "text_encoders/t5xxl_fp8_e4m3fn.safetensors"), t.t5xxl("F8_E4M3"))
    code, data, files = report(tree, "--fp8")
    assert code == 0, files
    assert "fp8_e4m3fn" in files["FLUX.1-dev diffusion model"]["detail"]
    assert "fp8_e4m3fn" in files["T5-XXL text encoder"]["detail"]
    # without --fp8 the fp8 files still count (the fp16 ones are only preferred for downloading)
    assert report(tree)[0] == 0


def test_gguf_flux_in_a_workflow(tree):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = t.model(tree, "diffusion_models/flux1-dev-Q8_0.gguf")
    w = gguf.GGUFWriter(path, "flux")
    w.add_tensor("double_blocks.0.img_attn.qkv.weight", np.zeros((3 * t.H, t.H), np.float16))
    w.add_tensor("guidance_in.in_layer.weight", np.zeros((t.H, 256), np.float16))
    for i in range(19):
        w.add_tensor(f"double_blocks.{i}.img_attn.norm.query_norm.scale", np.zeros(128, np.float32))
    for i in range(38):
        w.add_tensor(f"single_blocks.{i}.norm.key_norm.scale", np.zeros(128, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    wf = tree / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "flux1-dev-Q8_0.gguf"}}}))
    code, data, files = report(tree, "--workflow", str(wf))
    flux = files["FLUX.1-dev diffusion model"]
    assert flux["status"] == "ok" and "fp16" in flux["detail"] and "GGUF" in flux["detail"], flux
    assert "gguf" in [p["name"] for p in data["packages"]]


def test_old_comfyui_fails_the_version_check(tmp_path):
    root = t.full_install(str(tmp_path / "ComfyUI"), version="0.3.40")
    code, data, _ = report(root)
    assert code == 1 and data["comfyui"]["ok"] is False and data["comfyui"]["version"] == "0.3.40"
    assert all(f["status"] == "ok" for f in data["files"])
    _, text = run("--comfyui", root)
    assert "0.3.40" in text and "NOT SUPPORTED" in text


def test_version_range_comes_from_the_pack_comfyui_loads(tmp_path):
    root = t.full_install(str(tmp_path / "ComfyUI"), pack=False)
    code, data, _ = report(root)
    assert code == 1 and data["pack"] == {"path": None, "ok": False}
    assert "DreamO pack: NOT FOUND" in run("--comfyui", root)[1]
    pack = tmp_path / "ComfyUI" / "custom_nodes" / "DreamO-pack"
    pack.mkdir()
    (pack / "pyproject.toml").write_text('[project]\nname = "comfyui-dreamo"\ndependencies = []\n'
                                         '[tool.comfy]\nrequires-comfyui = ">=0.4"\n')
    code, data, _ = report(root)
    assert code == 1 and data["pack"]["path"] == str(pack)
    assert data["comfyui"]["requires"] == ">=0.4" and data["comfyui"]["ok"] is False and data["packages"] == []


def test_missing_python_package_fails(installed, monkeypatch):
    requires, deps = diagnosis.pack_requirements()
    monkeypatch.setattr(diagnosis, "pack_requirements", lambda pack: (requires, deps + ["no-such-package-dreamo>=1"]))
    code, data, _ = report(installed)
    bad = [p for p in data["packages"] if not p["ok"]]
    assert code == 1 and [p["name"] for p in bad] == ["no-such-package-dreamo"]
    assert bad[0]["fix"] == 'pip install "no-such-package-dreamo>=1"'


def test_extra_model_paths_yaml_folders_are_searched(tree, tmp_path):
    elsewhere = tmp_path / "shared_models"
    os.makedirs(elsewhere / "unet")
    os.rename(t.model(tree, "diffusion_models/flux1-dev.safetensors"), elsewhere / "unet" / "flux1-dev.safetensors")
    os.rename(t.model(tree, "dreamo"), elsewhere / "my_dreamo")
    code, data, files = report(tree)
    assert code == 1 and files["FLUX.1-dev diffusion model"]["status"] == "missing"
    (tree / "extra_model_paths.yaml").write_text(
        "mine:\n    base_path: ../shared_models\n    unet: unet\n    dreamo: |\n        my_dreamo\n")
    code, data, files = report(tree)
    assert code == 0, [f for f in files.values() if f["status"] != "ok"]
    assert files["FLUX.1-dev diffusion model"]["path"] == str(elsewhere / "unet" / "flux1-dev.safetensors")
    assert files["DreamO dpo stage"]["path"] == str(elsewhere / "my_dreamo" / "v1.1" / "dreamo_dpo_lora.safetensors")
    assert data["comfyui"]["extra_model_paths"] == [str(tree / "extra_model_paths.yaml")]


def test_is_default_extra_path_is_where_downloads_go(tree, tmp_path):
    os.remove(t.model(tree, "vae/ae.safetensors"))
    (tree / "extra_model_paths.yaml").write_text(f"big:\n    is_default: true\n    vae: {tmp_path / 'vaes'}\n")
    _, _, files = report(tree)
    assert files["FLUX.1 VAE"]["target"] == str(tmp_path / "vaes" / "ae.safetensors")


def test_repo_workflows_are_read_from_their_loader_nodes(installed):
    code, data, files = report(installed, "--workflow", os.path.join(REPO, "workflows", "api", "dreamo_id_tryon_api.json"))
    assert code == 1
    by_status = {f["label"]: f["status"] for f in data["files"]}
    assert by_status["RetinaFace resnet50 face detector"] == "missing"
    assert by_status["BiSeNet face parser"] == "missing"
    assert [f["status"] for f in data["files"]].count("ok") == 9  # unet, 2 text encoders, vae, 5 stages
    asked = {f["asked_by"] for f in data["files"]}
    assert "UNETLoader #1 'unet_name'" in asked and "DualCLIPLoader #3 'clip_name2'" in asked


def test_dual_clip_loader_needs_one_clip_l_and_one_t5(tree):
    wf = tree / "wf.json"
    wf.write_text(json.dumps({"3": {"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}}}))
    assert report(tree, "--workflow", str(wf))[0] == 0
    t.write_header_file(t.model(tree, "text_encoders/t5xxl_fp16.safetensors"), t.clip_text())
    code, data, _ = report(tree, "--workflow", str(wf))
    second = data["files"][1]
    assert code == 1 and data["files"][0]["status"] == "ok" and second["status"] == "bad"
    assert "both inputs of DualCLIPLoader #3 are CLIP-L" in second["detail"]


def test_lora_only_main_copy_needs_the_embedding_file(tree):
    os.remove(t.model(tree, "dreamo/dreamo.safetensors"))
    t.write_header_file(t.model(tree, "dreamo/dreamo_comfyui.safetensors"), t.xlabs_lora())
    code, data, files = report(tree)
    emb = files["DreamO embeddings"]
    assert code == 1 and emb["status"] == "missing" and emb["target"] == t.model(tree, "dreamo/embedding.safetensors")
    assert "no embeddings" in files["DreamO main stage"]["detail"]
    t.write_header_file(t.model(tree, "dreamo/embedding.safetensors"), {
        "dreamo_task_embedding.weight": ((2, 3072), "F32"), "dreamo_idx_embedding.weight": ((10, 3072), "F32")})
    code, data, files = report(tree)
    assert code == 0 and "no placeholder table" in files["DreamO embeddings"]["detail"]


def test_face_weights_are_loaded_without_unpickling_code(tree):
    wf = tree / "wf.json"
    wf.write_text(json.dumps({"16": {"class_type": "DreamOPreprocessorLoader", "inputs": {
        "face_detector": "retinaface_mobile0.25", "background_remover": "none"}}}))
    t.write_face_file(t.model(tree, "facexlib/detection_mobilenet0.25_Final.pth"), "mobile0.25")
    t.write_face_file(t.model(tree, "facexlib/parsing_bisenet.pth"), None)
    code, data, files = report(tree, "--workflow", str(wf))
    assert code == 0, files
    assert "tensors only" in files["BiSeNet face parser"]["detail"]
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with open(t.model(tree, "facexlib/parsing_bisenet.pth"), "wb") as f:
        pickle.dump({"w": Payload()}, f)
    t.write_face_file(t.model(tree, "facexlib/detection_mobilenet0.25_Final.pth"), "resnet50")  # wrong network
    code, data, files = report(tree, "--workflow", str(wf))
    assert code == 1
    assert files["BiSeNet face parser"]["status"] == "bad"
    assert "refused without running" in files["BiSeNet face parser"]["detail"]
    det = files["RetinaFace mobile0.25 face detector"]
    assert det["status"] == "bad" and "does not fit facexlib's RetinaFace-mobile0.25" in det["detail"]


def test_bad_arguments_exit_2(tmp_path, installed):
    assert run("--comfyui", str(tmp_path))[0] == 2
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    code, text = run("--comfyui", installed, "--workflow", str(ui))
    assert code == 2 and "no model loader nodes" in text
    ui.write_text("{not json")
    assert run("--comfyui", installed, "--workflow", str(ui))[0] == 2


@pytest.mark.parametrize("name", [template_files.key_of(p) for p in template_files.UI_FILES])
def test_ui_workflow_needs_the_same_files_as_its_api_twin(installed, name):
    from dreamo_cli.catalog import workflow_needs

    ui = json.load(open(template_files.ui_path(name)))
    api = json.load(open(template_files.api_path(name)))

    def summary(needs):
        return [(n.label, n.asked_by, n.folders, n.names, n.check, n.stage) for n in needs]
    assert summary(workflow_needs(ui)) == summary(workflow_needs(api)) and len(workflow_needs(api)) >= 8
    code, data, _ = report(installed, "--workflow", template_files.ui_path(name))
    assert data["files"] == report(installed, "--workflow", template_files.api_path(name))[1]["files"]
    bypassed = dict(ui, nodes=[dict(n, mode=4) if n["type"] == "DreamOStageLoader" else n for n in ui["nodes"]])
    assert not any("stage" in n.label for n in workflow_needs(bypassed)) and len(workflow_needs(bypassed)) >= 4


@pytest.mark.host
def test_ui_widget_order_matches_the_pack_nodes():
    from comfyui_dreamo.nodes import NODES
    from dreamo_cli.catalog import UI_WIDGETS

    for node in NODES:
        if node.NODE_ID in UI_WIDGETS:
            required = node.INPUT_TYPES()["required"]
            widgets = tuple(k for k, v in required.items() if isinstance(v[0], list) or v[0] in (
                "INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"))
            assert UI_WIDGETS[node.NODE_ID] == widgets, node.NODE_ID


def test_cli_runs_as_a_module(installed):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "dreamo_cli.doctor", "--comfyui", installed, "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True


@pytest.mark.host
def test_doctor_lists_and_picks_stage_files_as_the_stage_loader_does(tree):
    """The same names, in the same order, and the same 'auto' picks as DreamOStageLoader in a real ComfyUI."""
    import folder_paths

    from comfyui_dreamo.dreamo_ops import stages as st
    from comfyui_dreamo.nodes import model_folders
    from dreamo_cli.comfy_folders import ComfyInstall

    t.write_header_file(t.model(tree, "loras/DreamO/dreamo.safetensors"), t.xlabs_lora(embeddings=True))
    t.write_header_file(t.model(tree, "loras/DreamO/v1.1/dreamo_sft_lora.safetensors"), t.diffusers_lora())
    t.write_header_file(t.model(tree, "loras/other_turbo/diffusion_pytorch_model.safetensors"), t.diffusers_lora())
    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    try:
        model_folders.register_all()
        for folder in st.WEIGHT_FOLDERS:
            folder_paths.folder_names_and_paths[folder] = ([t.model(tree, folder)], {".safetensors", ".sft"})
        folder_paths.filename_list_cache.clear()
        node_names = model_folders.weight_file_names()
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()
    doctor_names = diagnosis.weight_file_names(ComfyInstall.open(str(tree)))
    assert doctor_names == node_names and len(node_names) == 8
    for stage in st.STAGES:
        for near in (None, "dreamo.safetensors", "DreamO/dreamo.safetensors"):
            assert st.find_stage_file(stage, doctor_names, near) == st.find_stage_file(stage, node_names, near)


def test_background_remover_is_looked_up_in_models_rembg(tree):
    code, data, files = report(tree, "--remover")
    remover = files["background remover (ONNX)"]
    assert code == 1 and remover["status"] == "missing" and "models/rembg" in remover["detail"]
    assert {"rembg", "onnxruntime"} <= {p["name"] for p in data["packages"]}
    write_onnx(t.model(tree, "rembg/u2net.onnx"))
    _, _, files = report(tree, "--remover")
    assert files["background remover (ONNX)"]["status"] == "ok"
    wf = tree / "wf.json"
    open(t.model(tree, "rembg/mystery.onnx"), "wb").write(b"x")
    wf.write_text(json.dumps({"16": {"class_type": "DreamOPreprocessorLoader", "inputs": {
        "face_detector": "none", "background_remover": "mystery.onnx"}}}))
    _, _, files = report(tree, "--workflow", str(wf))
    assert files["background remover (ONNX)"]["status"] == "bad"
    assert "'mystery.onnx' is not a background remover the pack can run" in files["background remover (ONNX)"]["detail"]


# ---- issues 18 and 19: content of ONNX files, warnings, workflow names and values, hostile trees and files ------

def write_onnx(path: str, weights: int = 4) -> str:
    """A real ONNX model (onnx's own writer): one Relu and an initializer of `weights` float32 values."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros(weights, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "remover",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weights])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weights])], [w])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(helper.make_model(graph, producer_name="test"), path)
    return path


@pytest.mark.parametrize("content, words", [
    (b"Not Found\n\n\n", "not an ONNX model: it looks like text"),
    (b"<!DOCTYPE html><html><body>rate limited</body></html>", "not an ONNX model: it looks like text"),
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "not an ONNX model"),
    ("truncated", "is cut short"),
])
def test_onnx_remover_files_are_checked_by_content(tree, tmp_path, content, words):
    path = t.model(tree, "rembg/BEN2_Base.onnx")
    if content == "truncated":
        good = open(write_onnx(str(tmp_path / "m.onnx"), weights=1000), "rb").read()
        content = good[:len(good) // 2]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    code, data, files = report(tree, "--remover")
    remover = files["background remover (ONNX)"]
    assert code == 1 and remover["status"] == "bad" and words in remover["detail"], remover
    write_onnx(path)
    remover = report(tree, "--remover")[2]["background remover (ONNX)"]
    assert remover["status"] == "ok" and "ONNX model (IR version" in remover["detail"], remover


def test_onnx_check_reads_a_bounded_amount_of_a_large_file(tmp_path):
    import time
    import tracemalloc

    from dreamo_ops.background import check_onnx_file

    path = write_onnx(str(tmp_path / "u2net.onnx"), weights=8 << 20)  # 32 MB of weights
    tracemalloc.start()
    start = time.perf_counter()
    try:
        what = check_onnx_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "ONNX model" in what and peak < 1 << 20, peak
    assert time.perf_counter() - start < 5


def test_torch_pickle_warnings_stay_out_of_the_output_and_the_file_is_still_refused(tree):
    """A pickle written with protocol 4 (Python's default) made torch print a 'Detected pickle protocol 4'
    UserWarning into the doctor's output; the file is still reported as refused, with the doctor's words."""
    import pickle
    import subprocess
    import sys

    os.makedirs(t.model(tree, "facexlib"), exist_ok=True)
    with open(t.model(tree, "facexlib/parsing_bisenet.pth"), "wb") as f:
        pickle.dump({"weight": [1.0, 2.0]}, f, protocol=4)
    t.write_face_file(t.model(tree, "facexlib/detection_Resnet50_Final.pth"), "resnet50")
    r = subprocess.run([sys.executable, "-W", "default", "-m", "dreamo_cli.doctor", "--comfyui", str(tree), "--id"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "pickle protocol" not in r.stdout + r.stderr and "Warning" not in r.stderr, r.stderr
    assert "[BAD      ] BiSeNet face parser" in r.stdout and "refused without running" in r.stdout


@pytest.mark.parametrize("name", ["ip", "id_tryon", "dreamo_style_api.json"])
def test_workflow_short_names_are_the_ones_the_client_takes(installed, name):
    from dreamo_cli.api_workflow import find_workflow

    code, data, _ = report(installed, "--workflow", name)
    by_path = report(installed, "--workflow", find_workflow(name))[1]
    assert data["files"] == by_path["files"] and data["files"], data
    code, text = run("--comfyui", installed, "--workflow", "no_such_workflow")
    assert code == 2 and "no workflow 'no_such_workflow'" in text and "ip" in text, text


STAGE = {"class_type": "DreamOStageLoader", "inputs": {"model": ["1", 0], "dreamo_file": "auto", "version": "v1.1",
                                                      "turbo": True}}


@pytest.mark.parametrize("inputs, words", [
    ({"version": "v9"}, "DreamOStageLoader #5 input 'version' is 'v9', not one of the node's options; choose one "
                        "of v1.1, v1, custom"),
    ({"turbo": "yes"}, "input 'turbo' is 'yes'"),
    ({"main_strength": 11.0}, "input 'main_strength' is 11.0; a strength is a number from -10 to 10"),
    ({"sft_strength": "NaN"}, "input 'sft_strength' is 'NaN'"),
    ({"dpo_file": 7}, "input 'dpo_file' is 7, not a file name"),
    ({"dreamo_file": "../../../etc/passwd"}, "a path outside ComfyUI's model folders"),
])
def test_workflow_values_are_checked_against_the_node_options(installed, tmp_path, inputs, words):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"5": dict(STAGE, inputs=dict(STAGE["inputs"], **inputs))}))
    code, text = run("--comfyui", installed, "--workflow", str(wf))
    assert code == 2 and words in text and "Traceback" not in text, text
    ok = {"5": STAGE}
    wf.write_text(json.dumps(ok))
    assert run("--comfyui", installed, "--workflow", str(wf))[0] == 0


def test_preprocessor_detector_must_be_one_of_the_node_options(installed, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"9": {"class_type": "DreamOPreprocessorLoader", "inputs": {
        "face_detector": "retinaface_giant", "background_remover": "none"}}}))
    code, text = run("--comfyui", installed, "--workflow", str(wf))
    assert code == 2 and "'face_detector' is 'retinaface_giant'" in text and "retinaface_mobile0.25" in text, text


@pytest.mark.parametrize("content", [
    "[1, 2, 3]", '"text"', "null", '{"1": 5}', '{"1": {"class_type": 5}}', '{"1": {"class_type": "UNETLoader", '
    '"inputs": "unet"}}', '{"1": {"class_type": "UNETLoader", "inputs": {"unet_name": {"a": 1}}}}',
    '{"nodes": [5]}', '{"nodes": [{"type": "UNETLoader", "widgets_values": {"a": 1}}]}',
    '{"nodes": [{"type": ["UNETLoader"]}]}', '{"nodes": [{"type": "DreamOStageLoader", "widgets_values": [1, 2]}]}',
    "[" * 100_000 + "]" * 100_000, b"\xff\xfe\x00garbage",
])
def test_malformed_workflows_exit_2_with_a_message(installed, tmp_path, content):
    wf = tmp_path / "wf.json"
    wf.write_bytes(content if isinstance(content, bytes) else content.encode())
    for argv in ((), ("--json",)):
        code, text = run("--comfyui", installed, "--workflow", str(wf), *argv)
        assert code == 2 and "Traceback" not in text, (content[:80], text)
        assert ("dreamo-doctor: " in text) if not argv else json.loads(text)["ok"] is False


def test_huge_workflow_file_is_refused_unread(installed, tmp_path, monkeypatch):
    monkeypatch.setattr(tool_target, "MAX_WORKFLOW_BYTES", 1000)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"5": STAGE, "pad": {"class_type": "Note", "inputs": {"text": "x" * 2000}}}))
    code, text = run("--comfyui", installed, "--workflow", str(wf))
    assert code == 2 and "larger than" in text, text


def test_a_symlink_loop_in_a_model_folder_ends(tree):
    """models/dreamo with two links back to itself: a walk following links without memory takes 2^depth steps
    (the doctor ran for minutes and gigabytes); each real folder is now visited once."""
    import time

    os.symlink("..", t.model(tree, "dreamo/v1.1/up"))
    os.symlink(".", t.model(tree, "dreamo/self"))
    os.symlink(t.model(tree, "dreamo"), t.model(tree, "dreamo/v1.1/abs"))
    start = time.perf_counter()
    code, data, files = report(tree)
    assert time.perf_counter() - start < 30
    assert code == 0 and files["DreamO dpo stage"]["path"].endswith("dreamo/v1.1/dreamo_dpo_lora.safetensors")


def test_a_listing_stops_after_its_folder_bound_and_says_so(tree, monkeypatch):
    from dreamo_cli import comfy_folders

    monkeypatch.setattr(comfy_folders, "MAX_WALK_DIRS", 5)
    for i in range(10):
        os.makedirs(t.model(tree, f"dreamo/empty{i}"))
    inst = comfy_folders.ComfyInstall.open(str(tree))
    names = inst.list_files("dreamo")
    assert len(names) < 6 and any("stopped listing" in w and "after 5 folders" in w for w in inst.warnings)
    code, text = run("--comfyui", str(tree))
    assert "stopped listing" in text, text


def laughs(levels: int) -> str:
    """A 'billion laughs' YAML: each level nine aliases of the one before (9**levels strings once expanded)."""
    rows = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(levels - 1)]
    return "\n".join(rows) + f"\nmine:\n  checkpoints: *{chr(96 + levels)}\n"


@pytest.mark.parametrize("text, words", [
    pytest.param(laughs(3), "mine.checkpoints must be a folder path", id="laughs-3-levels"),
    pytest.param(laughs(9), "more than 32 YAML aliases", id="laughs-9-levels"),
    pytest.param("\n".join(f"k{i}: &k{i} x" for i in range(40)) + "\nm:\n  v: [" + ", ".join(
        f"*k{i}" for i in range(40)) + "]\n", "more than 32 YAML aliases", id="40-aliases"),
    pytest.param("- just\n- a list\n", "is not an extra_model_paths.yaml: it holds list", id="a-list"),
    pytest.param("mine:\n  base_path: [1, 2]\n  vae: vae\n", "mine.base_path must be a folder path", id="base-list"),
    pytest.param("mine: {vae: vae\n", "could not be read", id="malformed"),
    pytest.param("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 16 levels deep", id="deep"),
    pytest.param("x: y\n# " + "pad " * 300_000 + "\n", "larger than 1,048,576 bytes", id="large"),
])
def test_hostile_or_malformed_extra_model_paths_yaml_exits_2_quickly(tree, text, words):
    import time
    import tracemalloc

    (tree / "extra_model_paths.yaml").write_text(text)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        code, out = run("--comfyui", str(tree))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2 and words in out and "Traceback" not in out, out[:500]
    assert peak < 64 << 20 and time.perf_counter() - start < 30, (peak, time.perf_counter() - start)


def test_without_torch_the_doctor_runs_and_says_what_to_install(installed):
    """From the light install (no torch, safetensors, numpy, facexlib): the files are found and listed, each
    content check says it did not run and what to install, and the exit code is 1 (not confirmed)."""
    import subprocess
    import sys

    block = ("import sys\nfor m in ('torch', 'safetensors', 'numpy', 'cv2', 'facexlib'): sys.modules[m] = None\n"
             "from dreamo_cli.doctor import main\nsys.exit(main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", block, "--comfyui", installed], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "[UNCHECKED] FLUX.1-dev diffusion model" in r.stdout, r.stdout
    assert "the Python package 'torch' is not installed" in r.stdout and 'comfyui-dreamo[doctor]' in r.stdout
    r = subprocess.run([sys.executable, "-c", block.replace("'facexlib'", "'facexlib', 'yaml'"), "--comfyui",
                        installed], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pyyaml" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.host
def test_value_checks_use_the_node_options():
    """The doctor's option lists are the nodes' own (it cannot import the nodes: they import ComfyUI)."""
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader
    from comfyui_dreamo.nodes.stage_loader import STRENGTH, DreamOStageLoader
    from dreamo_cli.catalog import DETECTORS, NONE, STRENGTH_RANGE
    from dreamo_ops import stages as st

    stage = DreamOStageLoader.INPUT_TYPES()["required"]
    assert tuple(stage["version"][0]) == tuple(st.VERSIONS) and (STRENGTH["min"], STRENGTH["max"]) == STRENGTH_RANGE
    assert all(v[1]["min"] == STRENGTH["min"] for k, v in stage.items() if k.endswith("_strength"))
    assert stage["turbo"][0] == "BOOLEAN"
    pre = DreamOPreprocessorLoader.INPUT_TYPES()["required"]
    assert tuple(pre["face_detector"][0]) == tuple(DETECTORS) + (NONE,)
    assert pre["download_missing_weights"][0] == "BOOLEAN"
