"""Every example workflow users get (workflows/api/*_api.json) runs end to end in a real ComfyUI server, with
tiny generated models substituted for the real files (dreamo_testkit/tiny_workflows.py): DreamO's own nodes, settings and
wiring are the files' own; the saved images and each reference's info show which paths ran."""
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from dreamo_testkit import photos  # the one lookup of the sample photos
from dreamo_testkit import REPO

pytestmark = [pytest.mark.host, pytest.mark.server]

API_FILES = sorted(glob.glob(os.path.join(REPO, "workflows", "api", "*_api.json")))


@pytest.mark.parametrize("path", API_FILES, ids=[os.path.basename(p) for p in API_FILES])
def test_example_workflow_runs_on_tiny_models(request, path):
    from dreamo_testkit import tiny_workflows

    api = json.load(open(path))
    photos.require(*tiny_workflows.input_images(api))  # before the server starts: no server for skipped tests
    server = request.getfixturevalue("server")
    missing = {k: v for k, v in server.unavailable.items() if k in tiny_workflows.needs(api)}
    if missing:
        pytest.skip("; ".join(f"{k}: {v}" for k, v in missing.items()))
    prompt, changes = tiny_workflows.tiny_prompt(api)
    assert any("DreamOTestTinyFlux" in c for c in changes)
    result = server.run(prompt, timeout=600)
    assert result["status"] == "success", json.dumps(result["error"], indent=1)[:3000]

    for k, n in api.items():
        if n["class_type"] == "SaveImage":
            saved = server.image_paths({k: result["outputs"].get(k, {})})
            assert saved, f"{n['_meta']['title']} saved nothing"
            if n["_meta"]["title"].startswith("output"):
                for p in saved:
                    assert len(np.unique(np.asarray(Image.open(p).convert("L")))) > 10  # decoded, not a blank

    # Each reference went the way its task says (the node's own info, also shown in the node).
    for node_id, node in api.items():
        if node["class_type"] != "DreamORefEncode":
            continue
        info = result["outputs"][node_id]["dreamo_info"][0]
        task = node["inputs"]["task"]
        if task == "id":
            assert "id:" in info and "512x512" in info and "fell back" not in info, info
        elif task == "ip":  # the path the workflow sets up: a mask input, else the remover, else kept
            pre = node["inputs"].get("preprocessor")
            remover = pre and api[str(pre[0])]["inputs"].get("background_remover", "none") != "none"
            expected = ("background replaced with white using the mask input" if "mask" in node["inputs"] else
                        "background replaced with white using the built-in remover" if remover else
                        "the subject is already on white")  # the sample pictures follow DreamO's advice
            assert expected in info and "background kept" not in info, info
        else:
            assert "style: used as is" in info, info
    # Every prompt of a workflow with a style reference carries DreamO's style instruction (written, or added by the
    # node when the reference is connected to it too) and no note says it lacks it.
    has_style = any(n["class_type"] == "DreamORefEncode" and n["inputs"].get("task") == "style" for n in api.values())
    for node_id, node in api.items():
        if node["class_type"] == "DreamOTextEncode" and has_style:
            info = result["outputs"][node_id]["dreamo_info"][0]
            written = node["inputs"]["text"].lower().startswith("generate a same style image.")
            assert written or "added 'generate a same style image.'" in info, info
            assert "lacks" not in info, info
        if node["class_type"] == "DreamOApply":
            assert "lacks" not in result["outputs"][node_id]["dreamo_info"][0]
