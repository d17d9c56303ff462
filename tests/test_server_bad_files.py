"""Untrusted and wrong files, and a model that is not FLUX.1, queued through the API of a real server.

Corrupted (random bytes), truncated (header intact, data cut), zero-byte and wrong-format (a PNG, a pickle named
.safetensors) files, pickles with code in them (.pt/.bin/.ckpt in models/loras, .pth in models/facexlib), a LoRA
for another architecture, embeddings of the wrong shapes and a broken background-remover model sit in the
folders the pack's loaders read. Each is chosen in a workflow: the prompt fails with a message naming the node,
the input and the fix, the same message is in /history, no pickle ever runs its code, and the server answers
the next good prompt. A tiny SDXL (ComfyUI's own class) is refused by each node that takes a MODEL.
The same checks in-process: tests/test_weights.py, test_stage_loader_host.py, test_model_check_host.py."""
import itertools
import os
import re
import time

import pytest
import requests

pytestmark = [pytest.mark.host, pytest.mark.server]

READ = r"is not a readable safetensors file \(truncated or corrupted\?\)"
EMPTY = r"is not a readable safetensors file: it is empty \(0 bytes"
PICTURE = r"is not a readable safetensors file: it is a PNG picture, not model weights\."
PICKLE = (r"is not a readable safetensors file: it is a Python pickle \(a \.ckpt/\.pt/\.bin file renamed\?\); it "
          r"was not unpickled")
ZIP = (r"is not a readable safetensors file: it is a zip archive \(a PyTorch \.pt/\.ckpt checkpoint renamed\?\); "
       r"it was not opened")
PICKLES = ("evil.pt", "evil.bin", "evil.ckpt")


def write_bad_files(sandbox, marker):
    from dreamo_testkit import lora_fixtures as lf
    from dreamo_testkit import tiny_models
    from dreamo_testkit import untrusted_files as uf

    dreamo = os.path.join(sandbox.models_dir, "dreamo")
    good = os.path.join(dreamo, "dreamo_tiny.safetensors")
    uf.random_bytes(os.path.join(dreamo, "bad_random.safetensors"))
    uf.truncated(os.path.join(dreamo, "bad_truncated.safetensors"), good)
    uf.empty(os.path.join(dreamo, "bad_empty.safetensors"))
    uf.png(os.path.join(dreamo, "bad_picture.safetensors"))
    uf.write(os.path.join(dreamo, "bad_pickle.safetensors"), uf.pickle_payload(marker))
    uf.write(os.path.join(dreamo, "bad_checkpoint.safetensors"), uf.torch_payload(marker))
    lf.save(os.path.join(dreamo, "lora_sdxl.safetensors"), lf.sdxl_lora())
    lf.save(os.path.join(dreamo, "lora_only.safetensors"), lf.xlabs(seed=3)[0])
    tiny_models.write_dreamo_file(os.path.join(dreamo, "emb_wide.safetensors"), hidden=64)
    emb = tiny_models.embedding_tensors()
    lf.save(os.path.join(dreamo, "emb_index.safetensors"), {**emb, "dreamo_idx_embedding.weight": emb[
        "dreamo_idx_embedding.weight"][:9]})
    lf.save(os.path.join(dreamo, "emb_t5_wide.safetensors"), tiny_models.embedding_tensors(t5_dim=40))
    loras = os.path.join(sandbox.models_dir, "loras")
    os.makedirs(loras, exist_ok=True)
    for name in PICKLES:
        uf.write(os.path.join(loras, name), uf.pickle_payload(marker))
    facexlib = os.path.join(sandbox.models_dir, "facexlib")
    os.makedirs(facexlib, exist_ok=True)
    for name in ("detection_mobilenet0.25_Final.pth", "parsing_bisenet.pth"):
        uf.write(os.path.join(facexlib, name), uf.torch_payload(marker))
    rembg = os.path.join(sandbox.models_dir, "rembg")
    os.makedirs(rembg, exist_ok=True)
    uf.random_bytes(os.path.join(rembg, "u2net.onnx"))


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    return str(tmp_path_factory.mktemp("marker") / "a_pickle_ran_code")


@pytest.fixture(scope="module")
def server(tmp_path_factory, marker):
    from dreamo_testkit import tiny_server

    srv = tiny_server.start(str(tmp_path_factory.mktemp("bad_files")), {"reference.png": "perfume.png",
                                                                         "woman.png": "woman1.png"},
                            prepare=lambda sandbox: write_bad_files(sandbox, marker))
    yield srv
    srv.stop()
    assert not os.path.exists(marker), "a pickle was unpickled by the server"


SEEDS = itertools.count(100)


def good_prompt():
    from dreamo_testkit import tiny_server

    p = tiny_server.install_check_prompt()
    p["10"]["inputs"]["seed"] = next(SEEDS)  # sampled again each time, not served from the cache
    return p


def with_loader(p, dreamo_file):
    """DreamOLoader's embeddings instead of the stage loader's."""
    p["60"] = {"class_type": "DreamOLoader", "inputs": {"dreamo_file": dreamo_file}}
    p["6"]["inputs"]["dreamo"] = p["8"]["inputs"]["dreamo"] = ["60", 0]
    return p


def with_stage_input(p, name, value):
    p["3"]["inputs"][name] = value
    return p


def with_preprocessor(p, detector, remover, task):
    p["50"] = {"class_type": "DreamOPreprocessorLoader", "inputs": {
        "face_detector": detector, "background_remover": remover, "download_missing_weights": False}}
    p["5"]["inputs"].update(preprocessor=["50", 0], task=task)
    if task == "id":
        p["4"]["inputs"]["image"] = "woman.png"
        p["5"]["inputs"].pop("mask")
    return p


def with_sdxl(p, node):
    p["70"] = {"class_type": "DreamOTestTinySDXL", "inputs": {"seed": 0}}
    if node == "DreamOStageLoader":
        p["3"]["inputs"]["model"] = ["70", 0]
    elif node == "DreamOApply":
        p["8"]["inputs"]["model"] = ["70", 0]
    else:  # routing on the SDXL model, sampled
        p["23"] = {"class_type": "DreamORouting", "inputs": {
            "model": ["70", 0], "mode": "hard", "strength": 4.0, "isolate_references": False, "start_percent": 0.0,
            "end_percent": 1.0, "blocks": "all", "capture_maps": False, "region_1": ["14", 0]}}
        p["10"]["inputs"]["model"] = ["23", 0]
    return p


L, S = "DreamOLoader", "DreamOStageLoader"
LOADER_FIX = r"Fix: re-download dreamo\.safetensors"
STAGE_FIX = r"Fix: re-download the file \(it may be incomplete\) or choose another one"
CASES = {
    # DreamOLoader's file
    "loader-random": (lambda p: with_loader(p, "bad_random.safetensors"), L,
                      rf"DreamOLoader \(input 'dreamo_file'\): 'bad_random\.safetensors' {READ}.*{LOADER_FIX}"),
    "loader-truncated": (lambda p: with_loader(p, "bad_truncated.safetensors"), L,
                         rf"DreamOLoader \(input 'dreamo_file'\): 'bad_truncated\.safetensors' {READ}"),
    "loader-zero-byte": (lambda p: with_loader(p, "bad_empty.safetensors"), L,
                         rf"DreamOLoader \(input 'dreamo_file'\): 'bad_empty\.safetensors' {EMPTY}.*{LOADER_FIX}"),
    "loader-png": (lambda p: with_loader(p, "bad_picture.safetensors"), L,
                   rf"DreamOLoader \(input 'dreamo_file'\): 'bad_picture\.safetensors' {PICTURE}"),
    "loader-pickle-renamed": (lambda p: with_loader(p, "bad_pickle.safetensors"), L,
                              rf"DreamOLoader \(input 'dreamo_file'\): 'bad_pickle\.safetensors' {PICKLE}"),
    "loader-lora-only": (lambda p: with_loader(p, "lora_only.safetensors"), L,
                         r"DreamOLoader \(input 'dreamo_file'\): 'lora_only\.safetensors' has no DreamO embeddings"
                         r".*Fix: "),
    "loader-index-shape": (lambda p: with_loader(p, "emb_index.safetensors"), L,
                           r"DreamOLoader \(input 'dreamo_file'\): 'emb_index\.safetensors': "
                           r"dreamo_idx_embedding\.weight has shape \(9, 48\), expected \(10, 48\)\..*Fix: "),
    "loader-wide": (lambda p: with_loader(p, "emb_wide.safetensors"), "DreamOApply",
                    r"DreamOApply \(input 'dreamo'\): the embeddings are 64-wide but the model's hidden size is 48\."
                    r".*Fix: load the DreamO file made for this model"),
    "loader-t5-width": (lambda p: with_loader(p, "emb_t5_wide.safetensors"), "DreamOTextEncode",
                        r"DreamOTextEncode \(input 'dreamo'\): the placeholder vectors are 40-wide.*Fix: "),
    # the stage loader's LoRA files, main file and embeddings
    "stage-random": (lambda p: with_stage_input(p, "cfg_distill_file", "bad_random.safetensors"), S,
                     rf"DreamOStageLoader \(input 'cfg_distill_file'\): 'bad_random\.safetensors' {READ}.*{STAGE_FIX}"),
    "stage-truncated": (lambda p: with_stage_input(p, "sft_file", "bad_truncated.safetensors"), S,
                        rf"DreamOStageLoader \(input 'sft_file'\): 'bad_truncated\.safetensors' {READ}.*{STAGE_FIX}"),
    "stage-zero-byte": (lambda p: with_stage_input(p, "dpo_file", "bad_empty.safetensors"), S,
                        rf"DreamOStageLoader \(input 'dpo_file'\): 'bad_empty\.safetensors' {EMPTY}.*{STAGE_FIX}"),
    "stage-png": (lambda p: with_stage_input(p, "quality_pos_file", "bad_picture.safetensors"), S,
                  rf"DreamOStageLoader \(input 'quality_pos_file'\): 'bad_picture\.safetensors' {PICTURE}"),
    "stage-pickle-renamed": (lambda p: with_stage_input(p, "quality_neg_file", "bad_pickle.safetensors"), S,
                             rf"DreamOStageLoader \(input 'quality_neg_file'\): 'bad_pickle\.safetensors' {PICKLE}"),
    "stage-zip-renamed": (lambda p: with_stage_input(p, "cfg_distill_file", "bad_checkpoint.safetensors"), S,
                          rf"DreamOStageLoader \(input 'cfg_distill_file'\): 'bad_checkpoint\.safetensors' {ZIP}"),
    "stage-main-random": (lambda p: with_stage_input(p, "dreamo_file", "bad_random.safetensors"), S,
                          rf"DreamOStageLoader \(input 'dreamo_file'\): 'bad_random\.safetensors' {READ}"),
    "stage-sdxl-lora": (lambda p: with_stage_input(p, "cfg_distill_file", "lora_sdxl.safetensors"), S,
                        r"DreamOStageLoader \(input 'cfg_distill_file'\): 'lora_sdxl\.safetensors': 9 key\(s\) map "
                        r"to no FLUX\.1 weight.*Fix: choose the DreamO file meant for this stage"),
    "stage-embeddings-wide": (lambda p: with_stage_input(p, "embedding_file", "emb_wide.safetensors"), S,
                              r"DreamOStageLoader \(input 'embedding_file'\): the embeddings in "
                              r"'emb_wide\.safetensors' are 64-wide but the model's hidden size is 48\..*Fix: "),
    "stage-embeddings-truncated": (lambda p: with_stage_input(p, "embedding_file", "bad_truncated.safetensors"), S,
                                   rf"DreamOStageLoader \(input 'embedding_file'\): 'bad_truncated\.safetensors' "
                                   rf"{READ}"),
    # face models: pickles are read with torch's weights_only loader, which refuses the payload unrun
    "face-pickle": (lambda p: with_preprocessor(p, "retinaface_mobile0.25", "none", "id"),
                    "DreamOPreprocessorLoader",
                    r"DreamOPreprocessorLoader \(input 'face_detector'\): .*'detection_mobilenet0\.25_Final\.pth' "
                    r"holds Python objects besides tensors; it was refused without running them.*Fix: replace"),
    "remover-corrupted": (lambda p: with_preprocessor(p, "none", "u2net.onnx", "ip"), "DreamOPreprocessorLoader",
                          r"DreamOPreprocessorLoader \(input 'background_remover'\): 'u2net\.onnx' could not be "
                          r"opened.*Fix: use an unmodified model file"),
    # a model that is not FLUX.1, at each node that takes a MODEL
    **{f"sdxl-{node}": ((lambda node: lambda p: with_sdxl(p, node))(node), node,
                        rf"{node} \(input 'model'\): DreamO works on FLUX\.1 models only; this is an SDXL model\."
                        r" Fix: load FLUX\.1-dev")
       for node in ("DreamOStageLoader", "DreamOApply", "DreamORouting")},
}


def history_error(server, prompt_id):
    """The error /history holds for the prompt (written just after the websocket reports it)."""
    deadline = time.monotonic() + 30
    while (h := requests.get(f"{server.url}/history/{prompt_id}", timeout=30).json().get(prompt_id)) is None:
        assert time.monotonic() < deadline, "the failed prompt never reached /history"
        time.sleep(0.1)
    errors = [m[1] for m in h["status"]["messages"] if m[0] == "execution_error"]
    assert h["status"]["status_str"] == "error" and len(errors) == 1
    return errors[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_file_or_model_is_named_with_the_fix_and_the_server_keeps_serving(server, marker, case):
    edit, node_type, pattern = CASES[case]
    result = server.run(edit(good_prompt()), timeout=300)
    assert result["status"] == "error", (result["status"], result["error"])
    error = result["error"]
    message = error["exception_message"]
    assert error["node_type"] == node_type, message
    assert re.match(pattern, message, re.S), message
    assert error["exception_type"].endswith("DreamOError"), error["exception_type"]
    assert history_error(server, error["prompt_id"])["exception_message"] == message
    assert not os.path.exists(marker), "a pickle was unpickled"
    assert server.run(good_prompt(), timeout=300)["status"] == "success"


@pytest.mark.parametrize("name", PICKLES)
@pytest.mark.parametrize("node,field", [("60", "dreamo_file"), ("3", "cfg_distill_file")])
def test_pickle_files_are_never_offered_nor_opened(server, marker, name, node, field):
    """.pt/.bin/.ckpt in models/loras: ComfyUI lists them there, the pack's nodes never offer them, and a workflow
    naming one is refused before anything runs."""
    from dreamo_testkit import untrusted_files as uf

    assert uf.unpickling_runs_code(marker + ".control")  # the payload is live: unpickled, it writes its marker
    info = server.object_info("DreamOStageLoader")["DreamOStageLoader"]["input"]["required"]
    assert "lora_sdxl.safetensors" in info[field][0]
    assert not any(n.endswith(PICKLES) for n in info["cfg_distill_file"][0] + info["dreamo_file"][0])
    loader = server.object_info("DreamOLoader")["DreamOLoader"]["input"]["required"]["dreamo_file"][0]
    assert "dreamo_tiny.safetensors" in loader and not any(n.endswith(PICKLES) for n in loader)
    p = with_loader(good_prompt(), "dreamo_tiny.safetensors")
    p[node]["inputs"][field] = name
    result = server.run(p, timeout=300)
    assert result["status"] in ("rejected", "invalid")
    assert "value_not_in_list" in str(result["error"]) and field in str(result["error"])
    assert not os.path.exists(marker), "a pickle was unpickled"
    assert server.run(good_prompt(), timeout=300)["status"] == "success"
