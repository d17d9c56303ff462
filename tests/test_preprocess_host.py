"""DreamOPreprocessorLoader and DreamORefEncode's preprocessing in a real ComfyUI: folders, errors, outputs, UI."""
import os

import numpy as np
import pytest
import torch

from dreamo_testkit import untrusted_files
from dreamo_testkit.face_fixtures import (NoNetwork, image_tensor, load_rgb, require_detector, write_facexlib_folder,
                                          write_tiny_remover)

pytestmark = pytest.mark.host


@pytest.fixture
def folders(tmp_path):
    """facexlib and rembg model folders in tmp, the temp folder too; ComfyUI's folder table restored after."""
    import folder_paths
    import comfyui_dreamo.nodes.preprocess  # noqa: F401 - registers the folders

    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    saved_temp = folder_paths.get_temp_directory()
    face_dir, rembg_dir, temp_dir = tmp_path / "facexlib", tmp_path / "rembg", tmp_path / "temp"
    for d in (face_dir, rembg_dir, temp_dir):
        d.mkdir()
    folder_paths.folder_names_and_paths["facexlib"] = ([str(face_dir)], saved["facexlib"][1])
    folder_paths.folder_names_and_paths["rembg"] = ([str(rembg_dir)], saved["rembg"][1])
    folder_paths.set_temp_directory(str(temp_dir))
    folder_paths.filename_list_cache.clear()
    yield {"facexlib": face_dir, "rembg": rembg_dir, "temp": temp_dir}
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.set_temp_directory(saved_temp)
    folder_paths.filename_list_cache.clear()


@pytest.fixture(scope="module")
def vae():
    from dreamo_testkit import tiny_models
    return tiny_models.vae(seed=0)


@pytest.fixture
def preprocessor(folders):
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader

    require_detector()
    write_facexlib_folder(str(folders["facexlib"]))
    (pre,) = DreamOPreprocessorLoader().load("retinaface_mobile0.25", "none", False)
    return pre


def test_folders_are_registered_keeping_extra_model_paths_entries(tmp_path):
    import folder_paths
    from comfyui_dreamo.nodes.model_folders import register_all

    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    try:
        extra = str(tmp_path / "elsewhere")
        folder_paths.add_model_folder_path("facexlib", extra)  # as extra_model_paths.yaml would
        register_all()
        paths, exts = folder_paths.folder_names_and_paths["facexlib"]
        assert extra in paths and os.path.join(folder_paths.models_dir, "facexlib") in paths
        assert {".pth", ".safetensors"} <= exts
        assert ".onnx" in folder_paths.folder_names_and_paths["rembg"][1]
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)


def test_loader_schema_is_documented(folders):
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader as L, default_remover

    spec = L.INPUT_TYPES()["required"]
    assert list(spec) == ["face_detector", "background_remover", "download_missing_weights"]
    assert spec["face_detector"][0] == ["retinaface_resnet50", "retinaface_mobile0.25", "none"]
    assert spec["face_detector"][1]["default"] == "retinaface_resnet50"
    assert spec["download_missing_weights"][1]["default"] is False
    assert spec["background_remover"][1]["default"] == "none"  # no remover file in models/rembg here
    assert default_remover(["u2net.onnx", "BEN2_Base.onnx", "birefnet-general.onnx"]) == "BEN2_Base.onnx"
    assert default_remover(["silueta.onnx"]) == "silueta.onnx" and default_remover([]) == "none"
    assert all(v[1].get("tooltip") for v in spec.values())
    assert L.RETURN_TYPES == ("DREAMO_PREPROCESSOR",) and len(L.OUTPUT_TOOLTIPS) == 1
    assert L.NODE_ID == "DreamOPreprocessorLoader" and L.CATEGORY == "DreamO" and L.DESCRIPTION


def test_missing_face_weights_error_names_file_folder_and_source_and_fetches_nothing(folders, monkeypatch):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader

    with NoNetwork(monkeypatch) as guard:
        with pytest.raises(DreamOError) as e:
            DreamOPreprocessorLoader().load("retinaface_resnet50", "none", False)
    msg = str(e.value)
    assert "DreamOPreprocessorLoader (input 'face_detector')" in msg
    assert "detection_Resnet50_Final.pth" in msg and str(folders["facexlib"]) in msg
    assert "https://github.com/xinntao/facexlib/releases" in msg and "download_missing_weights" in msg
    assert os.listdir(folders["facexlib"]) == [] and guard.attempts == []


def test_bad_face_weights_are_named_in_the_node_error(folders):
    """The node runs the doctor's content check (face_preprocess.load_model): the message names the file."""
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader

    write_facexlib_folder(str(folders["facexlib"]))
    parser = folders["facexlib"] / "parsing_bisenet.pth"
    parser.write_bytes(parser.read_bytes()[: parser.stat().st_size // 2])
    with pytest.raises(DreamOError) as e:
        DreamOPreprocessorLoader().load("retinaface_mobile0.25", "none", False)
    assert "'parsing_bisenet.pth' is not a readable weight file (truncated or corrupted?)" in str(e.value)

    marker = folders["facexlib"] / "unpickled"
    parser.write_bytes(untrusted_files.pickle_payload(str(marker)))
    with pytest.raises(DreamOError) as e:
        DreamOPreprocessorLoader().load("retinaface_mobile0.25", "none", False)
    assert "'parsing_bisenet.pth' holds Python objects besides tensors" in str(e.value) and not marker.exists()




def test_download_switch_fetches_into_the_facexlib_folder(folders, monkeypatch):
    import facexlib.utils.misc as misc
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader

    require_detector()
    write_facexlib_folder(str(folders["facexlib"]))
    os.remove(folders["facexlib"] / "parsing_bisenet.pth")
    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):  # stands in for the network
        fetched.append((url, dst))
        from dreamo_testkit.face_fixtures import random_parser_state
        torch.save(random_parser_state(), dst)

    monkeypatch.setattr(misc, "download_url_to_file", fake_download)
    (pre,) = DreamOPreprocessorLoader().load("retinaface_mobile0.25", "none", True)
    assert pre.face is not None
    assert fetched == [("https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
                        str(folders["facexlib"] / "parsing_bisenet.pth"))]


def test_download_without_network_says_the_download_failed(folders, monkeypatch):
    """With the switch on and no network, the error is about the download (not about corrupt files), and no
    partial file is left in the models folder."""
    import socket

    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", unreachable)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-3, "no network")))
    with pytest.raises(DreamOError) as e:
        DreamOPreprocessorLoader().load("retinaface_mobile0.25", "none", True)
    msg = str(e.value)
    assert msg.startswith("DreamOPreprocessorLoader (input 'download_missing_weights'): the download of "
                          "'detection_mobilenet0.25_Final.pth' from https://github.com/xinntao/facexlib/releases/")
    assert "failed" in msg and "no network" in msg and "Fix: check the network" in msg
    assert "replace the files" not in msg
    assert os.listdir(folders["facexlib"]) == []


def test_remover_choices_come_from_the_rembg_folder(folders, monkeypatch):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader

    from comfyui_dreamo.dreamo_ops.background import rembg_available

    if not rembg_available()[0]:
        pytest.skip(rembg_available()[1])
    write_tiny_remover(str(folders["rembg"] / "u2net.onnx"))
    (folders["rembg"] / "something.onnx").write_bytes(b"x")
    (folders["rembg"] / "readme.txt").write_text("x")
    import folder_paths
    folder_paths.filename_list_cache.clear()
    choices, opts = DreamOPreprocessorLoader.INPUT_TYPES()["required"]["background_remover"]
    assert choices == ["none", "u2net.onnx"] and opts["default"] == "u2net.onnx"  # present locally: used
    with NoNetwork(monkeypatch):
        (pre,) = DreamOPreprocessorLoader().load("none", "u2net.onnx", False)
    assert pre.face is None and pre.remover.model == "u2net"
    with pytest.raises(DreamOError, match="'../u2net.onnx' was not found"):
        DreamOPreprocessorLoader().load("none", "../u2net.onnx", False)


def test_ref_encode_schema_keeps_saved_workflows_working():
    from comfyui_dreamo.nodes.ref_encode import DreamORefEncode as R

    spec = R.INPUT_TYPES()
    assert list(spec["required"]) == ["image", "vae", "task", "resolution"]
    assert list(spec["optional"]) == ["mask", "preprocessor", "id_fallback"]
    assert spec["optional"]["preprocessor"][0] == "DREAMO_PREPROCESSOR"
    assert spec["optional"]["id_fallback"][0] == ["ip", "strict"]
    assert spec["optional"]["id_fallback"][1]["default"] == "ip"
    assert R.RETURN_NAMES == ("reference", "preview", "info") and R.RETURN_TYPES[0] == "DREAMO_REF"


def test_id_reference_end_to_end(preprocessor, vae, folders):
    from comfyui_dreamo.nodes.ref_encode import DreamORefEncode

    out = DreamORefEncode().encode(image_tensor(load_rgb("hinton.jpeg")), vae, "id", 512, preprocessor=preprocessor)
    ref, preview, info = out["result"]
    assert ref.task == "id" and ref.latent.shape == (1, 16, 64, 64)
    assert preview.shape == (1, 512, 512, 3) and torch.equal(preview, ref.pixels)
    assert "face found" in info and out["ui"]["dreamo_info"] == [info]
    shown = out["ui"]["dreamo_previews"]
    assert len(shown) == 2  # what the model sees, then the detection view
    for entry in shown:
        assert entry["type"] == "temp" and (folders["temp"] / entry["subfolder"] / entry["filename"]).is_file()
    from PIL import Image
    with Image.open(folders["temp"] / shown[0]["subfolder"] / shown[0]["filename"]) as im:
        assert np.array_equal(np.asarray(im), (preview[0] * 255).round().byte().numpy())


def test_id_fallback_to_ip_is_reported_and_strict_errors(preprocessor, vae):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.ref_encode import DreamORefEncode

    img = image_tensor(load_rgb("skirt.jpeg"))
    out = DreamORefEncode().encode(img, vae, "id", 256, preprocessor=preprocessor)
    ref, preview, info = out["result"]
    assert ref.task == "ip" and "fell back to ip" in info and "fell back" in out["ui"]["dreamo_info"][0]
    assert preview.shape[1] * preview.shape[2] <= 256 * 256 and preview.shape[1] % 16 == 0
    with pytest.raises(DreamOError, match=r"DreamORefEncode \(input 'id_fallback'\): no face"):
        DreamORefEncode().encode(img, vae, "id", 256, preprocessor=preprocessor, id_fallback="strict")


def test_id_without_preprocessor_says_what_to_connect(vae):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.ref_encode import DreamORefEncode

    with pytest.raises(DreamOError, match=r"DreamORefEncode \(input 'preprocessor'\).*DreamO Preprocessor Loader"):
        DreamORefEncode().encode(torch.rand(1, 64, 64, 3), vae, "id", 512)


def test_ip_without_any_background_source_says_so_on_the_node(vae, folders):
    from comfyui_dreamo.nodes.ref_encode import DreamORefEncode

    out = DreamORefEncode().encode(torch.rand(1, 64, 96, 3), vae, "ip", 64)
    assert "background kept" in out["ui"]["dreamo_info"][0]
    assert out["result"][0].latent.shape[0] == 1


def test_ip_with_the_loaded_remover(folders, vae, monkeypatch):
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader
    from comfyui_dreamo.nodes.ref_encode import DreamORefEncode
    from comfyui_dreamo.dreamo_ops.background import rembg_available

    if not rembg_available()[0]:
        pytest.skip(rembg_available()[1])
    write_tiny_remover(str(folders["rembg"] / "u2net.onnx"))
    img = np.full((128, 128, 3), 170, np.uint8)
    img[40:90, 40:90] = 10
    with NoNetwork(monkeypatch):
        (pre,) = DreamOPreprocessorLoader().load("none", "u2net.onnx", False)
        out = DreamORefEncode().encode(image_tensor(img), vae, "ip", 128, preprocessor=pre)
    _, preview, info = out["result"]
    assert "built-in remover (u2net)" in info
    assert preview[0, :20].mean() > 0.85 and preview[0, 55:75, 55:75].mean() < 0.15



def test_remover_without_rembg_installed_says_how_to_install(folders, monkeypatch):
    from comfyui_dreamo.dreamo_ops import background
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.preprocess import DreamOPreprocessorLoader

    (folders["rembg"] / "birefnet-general.onnx").write_bytes(b"not really a model")
    import folder_paths
    folder_paths.filename_list_cache.clear()
    monkeypatch.setattr(background, "rembg_available", lambda: (False, "No module named 'rembg'"))
    with pytest.raises(DreamOError, match=r"input 'background_remover'.*rembg.*pip install rembg"):
        DreamOPreprocessorLoader().load("none", "birefnet-general.onnx", False)
