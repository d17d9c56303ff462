"""Reliability in a long-lived real server: cached UI, bad inputs, state isolation between prompts, interrupts."""
import json
import os
import re
import time
import uuid

import pytest
import requests
import websocket
from safetensors.torch import load_file

pytestmark = [pytest.mark.host, pytest.mark.server]


@pytest.fixture(scope="module")
def server(session_server):
    """The session's shared tiny server (conftest.py), with the pictures of write_pictures added."""
    from dreamo_testkit import photos

    photos.require("perfume.png", "cat.png")  # reference.png and other.png
    write_pictures(session_server.sandbox)
    return session_server


def write_pictures(sandbox):
    """Pictures in other modes than 8-bit RGB, as users load them: grayscale, 16-bit grayscale, RGBA whose alpha
    cuts out the subject (a transparent border), and a palette picture."""
    import numpy as np
    from PIL import Image

    rgb = Image.open(os.path.join(sandbox.input_dir, "reference.png")).convert("RGB").resize((96, 128))
    rgb.convert("L").save(os.path.join(sandbox.input_dir, "gray.png"))
    wide = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(wide).save(os.path.join(sandbox.input_dir, "gray16.png"))
    rgba = rgb.convert("RGBA")
    alpha = np.zeros((128, 96), np.uint8)
    alpha[16:112, 16:80] = 255
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(os.path.join(sandbox.input_dir, "rgba.png"))
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(os.path.join(sandbox.input_dir, "palette.png"))


def dreamo_prompt(image="reference.png", prefix="dreamo", steps=2):
    from dreamo_testkit import tiny_server

    p = tiny_server.install_check_prompt()
    p["4"]["inputs"]["image"] = image
    p["10"]["inputs"]["steps"] = steps
    p["30"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": prefix}}
    return p


def plain_prompt(prefix, seed=3):
    """The same tiny Flux node (id and inputs as in the DreamO prompt: ComfyUI reuses the loaded model), sampled
    without DreamO."""
    p = dreamo_prompt()
    keep = {"1", "16", "7", "9"}
    p = {k: v for k, v in p.items() if k in keep}
    p["20"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "positive": ["7", 0], "negative": ["7", 0], "latent_image": ["9", 0], "seed": seed,
        "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    p["21"] = {"class_type": "SaveLatent", "inputs": {"samples": ["20", 0], "filename_prefix": prefix}}
    return p


def saved_latent(server, result):
    files = [f for out in result["outputs"].values() for f in out.get("latents", [])]
    assert len(files) == 1, result["outputs"]
    path = os.path.join(server.sandbox.output_dir, files[0].get("subfolder", ""), files[0]["filename"])
    return load_file(path)["latent_tensor"]


def cached_nodes(result):
    return {n for m in result["messages"] if m["type"] == "execution_cached" for n in m["data"]["nodes"]}


def test_cached_dreamo_nodes_still_show_their_ui_in_history(server):
    first = server.run(dreamo_prompt(prefix="ui_a"), timeout=300)
    assert first["status"] == "success", first["error"]
    again = dreamo_prompt(prefix="ui_b")  # only the saver changes: the DreamO nodes come from the cache
    second = server.run(again, timeout=300)
    assert second["status"] == "success", second["error"]
    assert {"5", "6"} <= cached_nodes(second)
    for node in ("5", "6"):
        assert second["outputs"][node]["dreamo_info"] == first["outputs"][node]["dreamo_info"]
    assert second["outputs"]["5"]["dreamo_previews"] == first["outputs"]["5"]["dreamo_previews"]


def test_a_one_pixel_reference_is_refused_with_the_fix_and_the_server_keeps_serving(server):
    p = dreamo_prompt(prefix="tiny")
    p["40"] = {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0}}
    p["5"]["inputs"]["image"] = ["40", 0]
    del p["5"]["inputs"]["mask"]
    result = server.run(p, timeout=300)
    assert result["status"] == "error"
    assert result["error"]["node_type"] == "DreamORefEncode"
    assert result["error"]["exception_message"].startswith(
        "DreamORefEncode (input 'image'): the picture is only 1x1 pixels")
    assert "Fix: use a picture at least 16 pixels" in result["error"]["exception_message"]
    assert server.run(dreamo_prompt(prefix="after_error"), timeout=300)["status"] == "success"


def test_the_loaded_flux_is_untouched_by_a_dreamo_prompt(server):
    """Plain sampling on the very model object a DreamO prompt used (ComfyUI's cache hands the same one back) is
    bit-identical before and after the DreamO prompt."""
    before = server.run(plain_prompt("plain_before"), timeout=300)
    assert before["status"] == "success", before["error"]
    assert server.run(dreamo_prompt(prefix="between"), timeout=300)["status"] == "success"
    after = server.run(plain_prompt("plain_after"), timeout=300)
    assert after["status"] == "success", after["error"]
    assert "1" in cached_nodes(after) and "20" not in cached_nodes(after)  # same model, sampled again
    assert torch_equal(saved_latent(server, before), saved_latent(server, after))


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def queue(server, prompt, client_id):
    r = requests.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["prompt_id"]


def wait_history(server, prompt_ids, timeout=300):
    deadline, done = time.monotonic() + timeout, {}
    while time.monotonic() < deadline and len(done) < len(prompt_ids):
        for pid in prompt_ids:
            h = requests.get(f"{server.url}/history/{pid}", timeout=30).json().get(pid)
            if h and h.get("status", {}).get("completed") is not None:
                done[pid] = h
        time.sleep(0.2)
    assert len(done) == len(prompt_ids), "prompts did not finish"
    return done


def test_prompts_queued_back_to_back_never_see_each_others_references(server):
    alone_x = server.run(dreamo_prompt("reference.png", "x_alone"), timeout=300)
    alone_y = server.run(dreamo_prompt("other.png", "y_alone"), timeout=300)
    x1, y1 = saved_latent(server, alone_x), saved_latent(server, alone_y)
    assert not torch_equal(x1, y1)  # the reference matters, so a mix-up would show
    client = uuid.uuid4().hex
    ids = [queue(server, dreamo_prompt("reference.png", "x_queued"), client),
           queue(server, dreamo_prompt("other.png", "y_queued"), client)]
    hist = wait_history(server, ids)
    x2, y2 = (saved_latent(server, {"outputs": hist[i]["outputs"]}) for i in ids)
    assert torch_equal(x2, x1) and torch_equal(y2, y1)


def interrupt_while_sampling(server, prompt):
    """Queue `prompt`, POST /interrupt once sampling reports progress, and check it ended as interrupted."""
    client = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client}", timeout=120)
    try:
        pid = queue(server, prompt, client)
        while True:  # interrupt once sampling is under way
            msg = ws.recv()
            if isinstance(msg, str) and json.loads(msg)["type"] == "progress":
                requests.post(f"{server.url}/interrupt", timeout=10)
                break
        status = wait_history(server, [pid])[pid]["status"]
    finally:
        ws.close()
    assert status["status_str"] == "error" and any(m[0] == "execution_interrupted" for m in status["messages"])


def test_an_interrupted_dreamo_sampling_leaves_nothing_behind(server):
    before = server.run(plain_prompt("int_before", seed=7), timeout=300)
    interrupt_while_sampling(server, dreamo_prompt(prefix="interrupted", steps=2000))
    after = server.run(plain_prompt("int_after", seed=7), timeout=300)
    assert after["status"] == "success" and "20" not in cached_nodes(after)
    assert torch_equal(saved_latent(server, before), saved_latent(server, after))
    assert server.run(dreamo_prompt(prefix="after_interrupt"), timeout=300)["status"] == "success"


def test_the_server_runs_behind_the_network_guard(server):
    """The guard is on for every test server (so the whole end-to-end suite runs without network) and a DreamO
    workflow makes no attempt (tests/test_network_guard.py shows the guard refuses and records one)."""
    assert server.env()["DREAMO_NETWORK_GUARD"] == "1"
    p = dreamo_prompt(prefix="guard")
    result = server.run(p, timeout=300)
    assert result["status"] == "success"
    assert not os.path.exists(server.network_log) or open(server.network_log).read() == ""


@pytest.mark.parametrize("node,field,value", [("3", "dreamo_file", "../../../etc/passwd"),
                                              ("3", "dreamo_file", "/etc/passwd"),
                                              ("3", "sft_file", "../dreamo/../../secret.safetensors")])
def test_file_inputs_only_take_names_from_comfyuis_model_lists(server, node, field, value):
    p = dreamo_prompt(prefix="traversal")
    p[node]["inputs"][field] = value
    result = server.run(p, timeout=300)
    assert result["status"] in ("rejected", "invalid")  # invalid: ComfyUI still ran the branches that validated
    assert "value_not_in_list" in json.dumps(result["error"]) and field in json.dumps(result["error"])
    ran = {m["data"].get("node") for m in result["messages"] if m["type"] == "executing"}
    assert node not in ran


@pytest.mark.parametrize("node", ["8", "6"])  # DreamOApply, DreamOTextEncode
def test_a_tenth_slot_or_unknown_input_in_a_workflow_is_refused(server, node):
    p = dreamo_prompt(prefix="tenth")
    p[node]["inputs"]["ref_10"] = ["5", 0]
    result = server.run(p, timeout=300)
    assert result["status"] == "error" and result["error"]["node_type"] == p[node]["class_type"]
    assert (f"{p[node]['class_type']} (input 'ref_10'): 'ref_10' is not an input of {p[node]['class_type']}"
            in result["error"]["exception_message"]) and "Fix: connect" in result["error"]["exception_message"]


def test_a_reference_batch_larger_than_the_latent_batch(server):
    p = dreamo_prompt(prefix="bigbatch")
    p["41"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["4", 0], "amount": 3}}
    p["5"]["inputs"]["image"] = ["41", 0]
    p["9"]["inputs"]["batch_size"] = 2
    result = server.run(p, timeout=300)
    assert result["status"] == "error" and result["error"]["node_type"] == "KSampler"
    assert ("DreamOApply (input 'ref_1'): the reference in slot 1 is a batch of 3 images but the latent batch is 2"
            in result["error"]["exception_message"])


def ref_info(result):
    return " | ".join(result["outputs"]["5"]["dreamo_info"])


@pytest.mark.parametrize("picture,mode,note", [
    ("gray.png", "L", "ip: background kept: the mask input keeps the whole picture"),
    # 16-bit: 0.33's LoadImage decodes it; 0.3.64's clips it to near white (current Pillow opens it as "I;16")
    # before any node sees it, which no node can tell from a white picture: only "read without error" here.
    ("gray16.png", "I;16", "ip: background kept: the mask input keeps the whole picture"),
    ("rgba.png", "RGBA", "ip: background replaced with white using the mask input"),
    ("palette.png", "P", "ip: background kept: the mask input keeps the whole picture"),
])
def test_grayscale_16_bit_rgba_and_palette_pictures_are_read(server, picture, mode, note):
    """Through LoadImage as users load them; the RGBA's alpha (inverted LoadImage mask) is the subject mask."""
    from PIL import Image

    assert Image.open(os.path.join(server.sandbox.input_dir, picture)).mode == mode
    result = server.run(dreamo_prompt(picture, prefix=f"mode_{mode}"), timeout=300)
    assert result["status"] == "success", result["error"]
    assert note in ref_info(result), ref_info(result)
    assert torch_finite(saved_latent(server, result))


def torch_finite(t):
    import torch

    return bool(torch.isfinite(t).all())


def solid_mask(value, width, height):
    return {"class_type": "SolidMask", "inputs": {"value": value, "width": width, "height": height}}


@pytest.mark.parametrize("case", ["all_zeros", "other_aspect"])
def test_a_bad_mask_is_refused_with_the_fix_and_the_server_keeps_serving(server, case):
    p = dreamo_prompt(prefix=f"mask_{case}")
    if case == "all_zeros":
        p["42"] = solid_mask(0.0, 1500, 1500)  # the picture's size, nothing kept
        expected = (r"DreamORefEncode \(input 'mask'\): the mask is all zeros: nothing would be kept.*"
                    r"Fix: connect a mask that is 1 on the subject")
    else:
        p["43"], p["44"] = solid_mask(0.0, 64, 16), solid_mask(1.0, 16, 16)
        p["42"] = {"class_type": "MaskComposite", "inputs": {"destination": ["43", 0], "source": ["44", 0], "x": 0,
                                                             "y": 0, "operation": "add"}}
        expected = (r"DreamORefEncode \(input 'mask'\): the mask is 64x16 but the picture is 1500x1500 \(another "
                    r"aspect ratio\).*Fix: connect the mask made from this picture")
    p["5"]["inputs"]["mask"] = ["42", 0]
    result = server.run(p, timeout=300)
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamORefEncode"
    assert re.match(expected, result["error"]["exception_message"], re.S), result["error"]["exception_message"]
    assert server.run(dreamo_prompt(prefix=f"after_mask_{case}", steps=3), timeout=300)["status"] == "success"


def test_reference_latents_from_a_vae_with_other_channels_are_refused(server):
    """A 4-channel (SD1.x/SDXL-style) VAE in DreamORefEncode: the reference cannot go into FLUX.1."""
    p = dreamo_prompt(prefix="vae4")
    p["45"] = {"class_type": "DreamOTestTinySDXLVAE", "inputs": {"seed": 2}}
    p["5"]["inputs"]["vae"] = ["45", 0]
    result = server.run(p, timeout=300)
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamOApply", result["status"]
    message = result["error"]["exception_message"]
    assert message.startswith("DreamOApply (input 'ref_1'): the reference latent has shape (1, 4, 8, 8), this model "
                              "needs 16-channel image latents. Fix: encode the reference with the Flux VAE"), message
    assert server.run(dreamo_prompt(prefix="after_vae4", steps=3), timeout=300)["status"] == "success"


@pytest.mark.parametrize("kind,problem", [("empty", r"the picture is empty \(0x0 pixels\)"),
                                          ("nan", r"the picture has NaN or infinite values"),
                                          ("inf", r"the picture has NaN or infinite values")])
def test_empty_and_non_finite_pictures_are_refused_with_the_fix(server, kind, problem):
    p = dreamo_prompt(prefix=f"picture_{kind}")
    p["46"] = {"class_type": "DreamOTestPicture", "inputs": {"kind": kind}}
    p["5"]["inputs"]["image"] = ["46", 0]
    del p["5"]["inputs"]["mask"]
    result = server.run(p, timeout=300)
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamORefEncode"
    message = result["error"]["exception_message"]
    assert re.match(rf"DreamORefEncode \(input 'image'\): {problem}.* Fix: \w", message, re.S), message
    assert server.run(dreamo_prompt(prefix=f"after_{kind}", steps=3), timeout=300)["status"] == "success"


def test_an_8k_picture_is_brought_down_to_the_reference_size(server):
    p = dreamo_prompt(prefix="picture_8k")
    p["46"] = {"class_type": "DreamOTestPicture", "inputs": {"kind": "8k"}}
    p["5"]["inputs"]["image"] = ["46", 0]
    del p["5"]["inputs"]["mask"]
    result = server.run(p, timeout=300)
    assert result["status"] == "success", result["error"]
    info = ref_info(result)
    assert "resized 7680x4320 -> " in info and "WARNING" not in info, info


def test_a_placeholder_for_an_empty_slot_is_refused_with_the_fix(server):
    p = dreamo_prompt(prefix="empty_slot")
    p["6"]["inputs"]["text"] = "the bottle [ref#1] next to [ref#3]"
    result = server.run(p, timeout=300)
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamOTextEncode"
    message = result["error"]["exception_message"]
    assert re.match(r"DreamOTextEncode \(input 'text'\): the prompt names \[ref#3\].* Fix: \w", message, re.S), message
    assert server.run(dreamo_prompt(prefix="after_empty_slot", steps=3), timeout=300)["status"] == "success"


def routed_prompt(prefix, seed=0, steps=2):
    """The DreamO prompt with DreamORouting (reference 1 on the left half, maps captured) and its saved maps."""
    p = dreamo_prompt(prefix=prefix, steps=steps)
    p["10"]["inputs"]["seed"] = seed
    p["19"] = solid_mask(0.0, 2, 1)
    p["20"] = solid_mask(1.0, 1, 1)
    p["21"] = {"class_type": "MaskComposite", "inputs": {"destination": ["19", 0], "source": ["20", 0], "x": 0, "y": 0,
                                                         "operation": "add"}}
    p["23"] = {"class_type": "DreamORouting", "inputs": {
        "model": ["8", 0], "mode": "hard", "strength": 4.0, "isolate_references": False, "start_percent": 0.0,
        "end_percent": 1.0, "blocks": "all", "capture_maps": True, "region_1": ["21", 0]}}
    p["10"]["inputs"]["model"] = ["23", 0]
    p["24"] = {"class_type": "DreamORoutingMap", "inputs": {"model": ["23", 0], "latent": ["10", 0]}}
    p["26"] = {"class_type": "MaskToImage", "inputs": {"mask": ["24", 0]}}
    p["27"] = {"class_type": "SaveImage", "inputs": {"images": ["26", 0], "filename_prefix": f"{prefix}_map"}}
    return p


def saved_map(server, result):
    import numpy as np
    from PIL import Image

    paths = [p for p in server.image_paths(result["outputs"]) if "_map_" in os.path.basename(p)]
    assert len(paths) == 1, paths
    return np.asarray(Image.open(paths[0]).convert("L"))


def test_an_interrupted_routed_sampling_leaves_no_maps_or_routing_behind(server):
    """The routed model comes from ComfyUI's cache in every prompt here (same DreamORouting inputs), so its map
    capture is shared: after an interrupted run and a run with another seed, seed 0 again gives the first run's
    latent and map, bit for bit; plain sampling of the loaded Flux is unchanged."""
    import numpy as np

    before = server.run(plain_prompt("route_plain_before", seed=5), timeout=300)
    first = server.run(routed_prompt("route_a"), timeout=300)
    assert first["status"] == "success", first["error"]
    map_a = saved_map(server, first)
    assert map_a.max() == 255 and map_a[:, -16:].max() == 0  # hard routing: nothing on the far right
    assert server.run(routed_prompt("route_b", seed=1), timeout=300)["status"] == "success"
    interrupt_while_sampling(server, routed_prompt("route_interrupted", seed=2, steps=2000))
    again = server.run(routed_prompt("route_a_again"), timeout=300)
    assert again["status"] == "success" and "23" in cached_nodes(again) and "10" not in cached_nodes(again)
    assert torch_equal(saved_latent(server, again), saved_latent(server, first))
    assert np.array_equal(saved_map(server, again), map_a)
    after = server.run(plain_prompt("route_plain_after", seed=5), timeout=300)
    assert after["status"] == "success" and "20" not in cached_nodes(after)
    assert torch_equal(saved_latent(server, before), saved_latent(server, after))
