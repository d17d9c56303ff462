"""End to end in a real ComfyUI server on loopback: queue API workflows through POST /prompt, follow the
websocket, read /history and check the saved images."""
import copy
import json
import os

import numpy as np
import pytest
import requests
from PIL import Image

from dreamo_testkit import kit_workflow

pytestmark = [pytest.mark.host, pytest.mark.server]

FACE_PHOTOS = ("hinton.jpeg", "mountain.png")  # the id tests' photos (dreamo_testkit/photos.py), copied in when present


def install_check():
    return json.load(open(kit_workflow("dreamo_install_check_api.json")))


def test_nodes_are_registered_with_their_public_inputs(server):
    info = server.object_info("DreamOApply")["DreamOApply"]
    assert list(info["input"]["required"]) == ["model", "positive", "dreamo"]
    assert list(info["input"]["optional"]) == [f"ref_{i}" for i in range(1, 10)]
    assert info["output"] == ["MODEL", "CONDITIONING"]
    enc = server.object_info("DreamORefEncode")["DreamORefEncode"]
    assert list(enc["input"]["required"])[:4] == ["image", "vae", "task", "resolution"]
    assert enc["output"][:2] == ["DREAMO_REF", "IMAGE"]
    loader = server.object_info("DreamOLoader")["DreamOLoader"]
    assert "dreamo_tiny.safetensors" in loader["input"]["required"]["dreamo_file"][0]


def test_a_bad_workflow_reports_the_node_error_and_the_server_survives(server):
    prompt = install_check()
    del prompt["8"]["inputs"]["ref_1"]
    result = server.run(prompt, timeout=300)
    assert result["status"] == "error"
    assert result["error"]["node_type"] == "DreamOApply"
    assert "DreamOApply (input 'ref_1'): no reference is connected" in result["error"]["exception_message"]
    assert requests.get(server.url + "/system_stats", timeout=10).ok


def test_an_invalid_input_is_not_reported_as_success(server):
    prompt = install_check()
    prompt["5"]["inputs"]["resolution"] = 48  # below the input's minimum: ComfyUI skips that branch
    result = server.run(prompt, timeout=300)
    assert result["status"] in ("invalid", "rejected")
    assert "resolution" in json.dumps(result["error"])


def test_install_check_workflow_runs_and_saves_the_image(server):
    result = server.run(install_check(), timeout=300)
    assert result["status"] == "success", result["error"]
    saved = server.image_paths(result["outputs"])
    assert len(saved) == 1 and os.path.basename(saved[0]).startswith("dreamo_install_check")
    img = Image.open(saved[0])
    assert img.size == (64, 48)
    assert len(np.unique(np.asarray(img.convert("L")))) > 10  # a real decoded image, not a blank
    preview = result["outputs"]["13"]["images"][0]
    assert preview["type"] == "temp"
    info = result["outputs"]["5"]["dreamo_info"][0]
    assert "ip: background kept: the mask input keeps the whole picture" in info and "-> 64x64" in info


def test_two_references_and_a_batch_of_two(server):
    prompt = install_check()
    prompt["15"] = copy.deepcopy(prompt["5"])
    prompt["15"]["inputs"]["task"] = "style"
    prompt["15"]["inputs"]["resolution"] = 96
    prompt["8"]["inputs"]["ref_3"] = ["15", 0]
    prompt["6"]["inputs"]["ref_3"] = ["15", 0]
    prompt["6"]["inputs"]["text"] = "the perfume bottle [ref#1] painted in the style of [ref#3]"
    prompt["9"]["inputs"]["batch_size"] = 2
    result = server.run(prompt, timeout=300)
    assert result["status"] == "success", result["error"]
    assert len(server.image_paths(result["outputs"])) == 2
    assert "generate a same style image." in result["outputs"]["6"]["dreamo_info"][0]


def test_frontend_extension_is_served(server):
    r = requests.get(server.url + "/extensions/comfyui_dreamo/dreamo.js", timeout=10)
    assert r.ok and "DreamO.ReferenceInfo" in r.text


def test_a_placeholder_without_its_reference_is_reported(server):
    prompt = install_check()
    prompt["6"]["inputs"]["text"] = "the bottle [ref#1] next to [ref#3]"
    result = server.run(prompt, timeout=300)
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamOTextEncode"
    assert "[ref#3]" in result["error"]["exception_message"]


def test_dreamo_loader_can_replace_the_stage_loaders_embeddings(server):
    prompt = install_check()
    prompt["18"] = {"class_type": "DreamOLoader", "inputs": {"dreamo_file": "dreamo_tiny.safetensors"}}
    prompt["6"]["inputs"]["dreamo"] = ["18", 0]
    prompt["8"]["inputs"]["dreamo"] = ["18", 0]
    prompt["8"]["inputs"]["model"] = ["1", 0]  # no LoRA: DreamO's embeddings alone still run
    result = server.run(prompt, timeout=300)
    assert result["status"] == "success", result["error"]
    assert len(server.image_paths(result["outputs"])) == 1


def id_workflow(image: str, fallback: str = "ip"):
    prompt = install_check()
    prompt["19"] = {"class_type": "DreamOPreprocessorLoader", "inputs": {
        "face_detector": "retinaface_mobile0.25", "background_remover": "none", "download_missing_weights": False}}
    prompt["4"]["inputs"]["image"] = image
    prompt["5"]["inputs"].update(task="id", preprocessor=["19", 0], id_fallback=fallback)
    return prompt


def require_face_inputs(server, *names):
    from dreamo_testkit import offline_retinaface
    from dreamo_testkit import photos

    ok, reason = offline_retinaface.available()
    if not ok:
        pytest.skip(reason)
    photos.require(*names)


def test_an_id_reference_is_aligned_and_shown(server):
    require_face_inputs(server, "hinton.jpeg")
    assert "DreamOPreprocessorLoader" in server.object_info("DreamOPreprocessorLoader")
    result = server.run(id_workflow("hinton.jpeg"), timeout=300)
    assert result["status"] == "success", result["error"]
    info = result["outputs"]["5"]["dreamo_info"][0]
    assert "id:" in info and "512x512" in info
    preview = result["outputs"]["5"]["dreamo_previews"][0]
    shown = Image.open(os.path.join(server.sandbox.root, "temp", preview["subfolder"], preview["filename"]))
    assert shown.size == (512, 512)


def test_an_id_reference_without_a_face_falls_back_or_stops(server):
    require_face_inputs(server, "mountain.png")
    result = server.run(id_workflow("mountain.png"), timeout=300)
    assert result["status"] == "success", result["error"]
    assert "fell back to ip" in result["outputs"]["5"]["dreamo_info"][0]
    strict = server.run(id_workflow("mountain.png", fallback="strict"), timeout=300)
    assert strict["status"] == "error" and strict["error"]["node_type"] == "DreamORefEncode"
    assert "no face was found" in strict["error"]["exception_message"]


def test_unet_loader_stage_loader_apply_ksampler_on_an_fp8_flux_file(server):
    """The stock loader path: UNETLoader (fp8) -> DreamOStageLoader -> DreamOApply -> KSampler, on a generated
    FLUX.1-shaped file (UNETLoader only detects Flux at hidden size 3072; the file has one block)."""
    from dreamo_testkit import tiny_models

    unet_dir = os.path.join(server.sandbox.models_dir, "diffusion_models")
    os.makedirs(unet_dir, exist_ok=True)
    tiny_models.write_flux_unet_file(os.path.join(unet_dir, "flux_one_block_fp8.safetensors"))
    tiny_models.write_dreamo_file(os.path.join(server.sandbox.models_dir, "dreamo", "dreamo_flux_sized.safetensors"),
                                  hidden=3072, with_t5=False)
    prompt = install_check()
    prompt["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "flux_one_block_fp8.safetensors",
                                                          "weight_dtype": "fp8_e4m3fn"}}
    prompt["3"]["inputs"]["dreamo_file"] = "dreamo_flux_sized.safetensors"
    prompt["20"] = {"class_type": "DreamOTestConditioning", "inputs": {"seed": 3, "tokens": 8, "flux_sized": True}}
    prompt["21"] = {"class_type": "DreamOTestConditioning", "inputs": {"seed": 4, "tokens": 8, "flux_sized": True}}
    prompt["8"]["inputs"]["positive"] = ["20", 0]
    prompt["10"]["inputs"]["negative"] = ["21", 0]
    for unused in ("6", "7", "16", "17"):
        del prompt[unused]
    result = server.run(prompt, timeout=600)
    assert result["status"] == "success", result["error"]
    (saved,) = server.image_paths(result["outputs"])
    assert Image.open(saved).size == (64, 48)
    assert "DreamO stage main: dreamo_flux_sized.safetensors" in server.log_tail(200)


@pytest.mark.browser
def test_in_the_browser_the_workflow_loads_runs_and_shows_the_reference_info(page, server, tmp_path):
    """The real ComfyUI frontend in headless Chromium: our extension loads without errors (conftest.py's `page`
    fails the test on one), the API workflow loads on the canvas, queueing it from the page runs it, and the
    reference info is shown in the node."""
    assert page.js("() => app.extensions.some(e => e.name === 'DreamO.ReferenceInfo')")
    workflow = install_check()
    workflow["5"]["inputs"]["resolution"] = 144  # unique on the shared server: not cached
    page.js("async (wf) => { await app.loadApiJson(wf, 'dreamo_install_check_api.json'); }", workflow)
    types = page.js("() => app.graph._nodes.map(n => n.type)")
    assert sorted(types) == sorted(n["class_type"] for n in workflow.values())
    page.js("async () => { await app.queuePrompt(0, 1); }")
    page.page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'DreamORefEncode'"
                                " && n.dreamoFeedback?.get('info').length)", timeout=120000)
    info = page.js("() => app.graph._nodes.find(n => n.type === 'DreamORefEncode').dreamoFeedback.element.innerText")
    assert "background kept: the mask input keeps the whole picture" in info and "-> 144x144" in info
    page.js("""() => { const n = app.graph._nodes.find(n => n.type === 'DreamORefEncode');
                       app.canvas.ds.scale = 1.2; app.canvas.centerOnNode(n); app.canvas.setDirty(true, true); }""")
    page.settle(500)
    page.page.screenshot(path=os.environ.get("DREAMO_SCREENSHOT", str(tmp_path / "canvas.png")))
