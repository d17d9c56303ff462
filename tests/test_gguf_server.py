"""A real ComfyUI server with city96's ComfyUI-GGUF pack installed next to this one: the user's workflow
Unet Loader (GGUF) -> DreamO Stage Loader -> DreamO Apply -> KSampler -> VAE Decode on a Q8_0 FLUX.1 file.

The GGUF pack comes from outside the repo (COMFYUI_GGUF_PATH, see dreamo_testkit/gguf_fixtures.py) and is linked into the
sandbox's custom_nodes; without it this test skips with that reason.
"""
import json
import os

import pytest
from PIL import Image

from dreamo_testkit import gguf_fixtures as gf

pytestmark = [pytest.mark.host, pytest.mark.server,
              pytest.mark.skipif(gf.pack_path() is None, reason=gf.SKIP_REASON)]

GGUF_NAME = "flux1_one_block_Q8_0.gguf"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gguf")
    from dreamo_testkit import tiny_models
    from dreamo_testkit.comfyui_runner import Sandbox, Server

    sandbox = Sandbox(str(tmp_path_factory.mktemp("comfy_gguf")), isolated=True, test_nodes=True,
                      extra_nodes={"ComfyUI-GGUF": gf.pack_path()}).prepare()
    gf.link_into(gf.shared_flux_gguf(tmp_path_factory)[0], os.path.join(sandbox.models_dir, "diffusion_models"),
                 GGUF_NAME)
    os.makedirs(os.path.join(sandbox.models_dir, "dreamo"))
    tiny_models.write_dreamo_file(os.path.join(sandbox.models_dir, "dreamo", "dreamo_flux_sized.safetensors"),
                                  hidden=3072, with_t5=False)
    Image.new("RGB", (96, 96), (200, 30, 30)).save(os.path.join(sandbox.input_dir, "reference.png"))
    srv = Server(sandbox).start()
    yield srv
    srv.stop()


def gguf_workflow():
    from dreamo_testkit import tiny_server

    prompt = tiny_server.install_check_prompt()
    prompt["1"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": GGUF_NAME}}
    prompt["3"]["inputs"]["dreamo_file"] = "dreamo_flux_sized.safetensors"
    prompt["20"] = {"class_type": "DreamOTestConditioning", "inputs": {"seed": 3, "tokens": 8, "flux_sized": True}}
    prompt["21"] = {"class_type": "DreamOTestConditioning", "inputs": {"seed": 4, "tokens": 8, "flux_sized": True}}
    prompt["8"]["inputs"]["positive"] = ["20", 0]
    prompt["10"]["inputs"]["negative"] = ["21", 0]
    for unused in ("6", "7", "16", "17"):  # the tiny CLIP/T5 does not fit a FLUX.1-sized model
        del prompt[unused]
    return prompt


def test_gguf_unet_loader_stage_loader_apply_ksampler(server):
    info = server.object_info("UnetLoaderGGUF")["UnetLoaderGGUF"]
    assert GGUF_NAME in info["input"]["required"]["unet_name"][0]
    result = server.run(gguf_workflow(), timeout=600)
    assert result["status"] == "success", result["error"]
    (saved,) = server.image_paths(result["outputs"])
    assert Image.open(saved).size == (64, 48)
    log = server.log_tail(400)
    assert "gguf qtypes:" in log and "Q8_0" in log, "the model came through the GGUF pack's loader"
    assert "DreamO stage main: dreamo_flux_sized.safetensors" in log
