"""Identity preprocessing on the real photos with a real offline RetinaFace through stock facexlib's code."""
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from dreamo_testkit import offline_retinaface, untrusted_files
from comfyui_dreamo.dreamo_ops import face_preprocess as fp
from comfyui_dreamo.dreamo_ops.resize import long_side_size

from dreamo_testkit.face_fixtures import NO_FACE, PORTRAITS, NoNetwork, load_rgb, offline_preprocessor, require_detector

EYE_TOLERANCE_PX = 10.0  # LMEDS fits 4 degrees of freedom to 5 points: eyes land within ~2% of the crop
REDETECT_TOLERANCE_PX = 16.0  # a second, independent detection on the crop has its own landmark noise


@pytest.fixture(scope="module")
def face():
    return offline_preprocessor()


@pytest.fixture(scope="module")
def portraits(face):
    return {name: face.prepare_id(load_rgb(name)) for name in PORTRAITS}


@pytest.mark.parametrize("name", PORTRAITS)
def test_one_face_in_each_portrait(portraits, name):
    crop = portraits[name]
    assert len(crop.faces) == 1 and crop.chosen == 0
    assert crop.faces[0].score > fp.DETECTION_THRESHOLD


@pytest.mark.parametrize("name", NO_FACE)
def test_no_face_in_garments_and_landscape(face, name):
    crop = face.prepare_id(load_rgb(name))
    assert crop.faces == [] and crop.pixels is None and crop.chosen is None


@pytest.mark.parametrize("name", PORTRAITS)
def test_aligned_crop_puts_the_eyes_on_the_ffhq_template(face, portraits, name):
    crop = portraits[name]
    assert crop.pixels.shape == (512, 512, 3) and crop.pixels.dtype == np.uint8
    assert crop.aligned.shape == (512, 512, 3) and crop.labels.shape == (512, 512)
    # the detected eyes, carried by the alignment transform, sit on the template's eyes
    lm = crop.faces[crop.chosen].landmarks
    mapped = np.c_[lm, np.ones(5)] @ crop.matrix.T
    eye_err = np.linalg.norm(mapped[:2] - fp.FFHQ_TEMPLATE_512[:2], axis=1)
    assert eye_err.max() < EYE_TOLERANCE_PX, eye_err
    # and an independent detection on the aligned crop finds them there too
    again = face.detect(crop.aligned)
    assert len(again) == 1
    redetected = np.linalg.norm(again[0].landmarks[:2] - fp.FFHQ_TEMPLATE_512[:2], axis=1)
    assert redetected.max() < REDETECT_TOLERANCE_PX, redetected
    # a similarity transform: equal scale on both axes, no shear
    a, b = crop.matrix[:, 0], crop.matrix[:, 1]
    assert np.isclose(np.linalg.norm(a), np.linalg.norm(b)) and abs(a @ b) < 1e-9


def test_official_order_caps_the_long_side_before_detection(portraits):
    rgb = load_rgb("man1.png")
    assert max(rgb.shape[:2]) > fp.LONG_SIDE
    crop = portraits["man1.png"]
    assert crop.image.shape[:2] == long_side_size(rgb.shape[0], rgb.shape[1], fp.LONG_SIDE)
    x1, y1, x2, y2 = crop.faces[0].box
    assert 0 <= x1 < x2 <= crop.image.shape[1] + 5 and 0 <= y1 < y2 <= crop.image.shape[0] + 5


def test_white_out_follows_the_parsing_labels(portraits):
    crop = portraits["hinton.jpeg"]
    white = np.isin(crop.labels, fp.WHITE_LABELS)
    assert (crop.pixels[white] == 255).all()
    assert np.array_equal(crop.pixels[~white], crop.aligned[~white])
    assert crop.labels.max() < fp.PARSER_CLASSES


def test_parser_input_is_imagenet_normalised_rgb_and_labels_are_the_argmax():
    class Spy(torch.nn.Module):
        def forward(self, x):
            self.seen = x.clone()
            logits = torch.zeros(1, fp.PARSER_CLASSES, *x.shape[2:])
            rows = torch.arange(x.shape[2]).view(-1, 1).expand(-1, x.shape[3])
            logits.scatter_(1, (rows % fp.PARSER_CLASSES)[None, None], 1.0)
            return logits, logits * 0, logits * 0

    require_detector()
    spy = Spy()
    pre = fp.FacePreprocessor(fp.build_detector(offline_retinaface.state_dict(), "mobile0.25"), spy)
    rng = np.random.default_rng(0)
    face_rgb = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    labels = pre.parse(face_rgb, torch.device("cpu"))
    x = torch.from_numpy(face_rgb).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor(fp.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(fp.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(spy.seen, (x - mean) / std, atol=1e-6)
    expected = (np.arange(64) % fp.PARSER_CLASSES)[:, None].repeat(48, 1)
    assert np.array_equal(labels, expected)
    out = fp.white_out(face_rgb, labels)
    for label in range(fp.PARSER_CLASSES):
        rows = labels == label
        if label in fp.WHITE_LABELS:
            assert (out[rows] == 255).all()
        else:
            assert np.array_equal(out[rows], face_rgb[rows])


def test_random_bisenet_parses_a_512_crop_into_19_labels(portraits):
    labels = portraits["woman1.png"].labels
    assert labels.shape == (512, 512) and labels.dtype == np.uint8 and labels.max() < 19


def test_the_most_central_of_several_faces_is_used(face):
    a, b = load_rgb("hinton.jpeg"), load_rgb("woman1.png")
    canvas = np.full((700, 1700, 3), 255, np.uint8)
    # (x of hinton, x of woman1, which picture is central): canvas centre x = 850
    for ax, bx, central in ((600, 1250, "a"), (50, 646, "b")):
        canvas[:] = 255
        canvas[50:50 + a.shape[0], ax:ax + a.shape[1]] = a
        canvas[50:50 + b.shape[0], bx:bx + b.shape[1]] = b
        crop = face.prepare_id(canvas)
        assert len(crop.faces) == 2
        h, w = crop.image.shape[:2]
        dist = [np.hypot(f.center[0] - w / 2, f.center[1] - h / 2) for f in crop.faces]
        assert crop.chosen == int(np.argmin(dist))
        chosen_x = crop.faces[crop.chosen].center[0] * canvas.shape[1] / w
        lo, width = (ax, a.shape[1]) if central == "a" else (bx, b.shape[1])
        assert lo <= chosen_x <= lo + width


def test_central_face_picks_the_box_nearest_the_centre():
    faces = [fp.Face((0, 0, 10, 10), 0.99, np.zeros((5, 2))), fp.Face((40, 40, 60, 60), 0.98, np.zeros((5, 2))),
             fp.Face((80, 0, 100, 20), 0.999, np.zeros((5, 2)))]
    assert fp.central_face(faces, 100, 100) == 1
    assert fp.central_face(faces[::2], 100, 100) in (0, 1)


def test_alignment_is_deterministic(face):
    rgb = load_rgb("hinton.jpeg")
    a, b = face.prepare_id(rgb), face.prepare_id(rgb)
    assert np.array_equal(a.matrix, b.matrix) and np.array_equal(a.pixels, b.pixels)


def test_draw_faces_marks_the_chosen_face_green(portraits):
    crop = portraits["hinton.jpeg"]
    view = fp.draw_faces(crop.image, crop.faces, crop.chosen)
    assert view.shape == crop.image.shape
    x1, y1, _, _ = (int(round(v)) for v in crop.faces[0].box)
    assert tuple(view[y1, x1]) == (0, 220, 0)


def test_models_move_only_while_running(monkeypatch):
    require_detector()
    pre = offline_preprocessor()
    seen = []
    real_move = pre._move

    def record(device):
        seen.append(torch.device(device))
        real_move(device)

    monkeypatch.setattr(pre, "_move", record)
    pre.prepare_id(load_rgb("hinton.jpeg"), device="cpu")
    assert len(seen) == 2 and seen[-1] == pre.offload_device
    assert next(pre.detector.parameters()).device == pre.offload_device
    assert next(pre.parser.parameters()).device == pre.offload_device


# --- weight files: located locally, loaded safely, never fetched ---

def test_missing_weight_is_an_error_naming_file_folder_and_source(tmp_path, monkeypatch):
    with NoNetwork(monkeypatch) as guard:
        with pytest.raises(fp.MissingWeightsError) as e:
            fp.FacePreprocessor.from_folders([str(tmp_path)], "retinaface_resnet50")
    msg = str(e.value)
    assert "detection_Resnet50_Final.pth" in msg and str(tmp_path) in msg
    assert "github.com/xinntao/facexlib/releases" in msg and "download_missing_weights" in msg
    assert os.listdir(tmp_path) == [] and guard.attempts == []


def test_missing_parser_is_reported_after_the_detector_is_found(tmp_path, monkeypatch):
    require_detector()
    offline_retinaface.write(str(tmp_path))
    with NoNetwork(monkeypatch):
        with pytest.raises(fp.MissingWeightsError, match="parsing_bisenet.pth"):
            fp.FacePreprocessor.from_folders([str(tmp_path)], "retinaface_mobile0.25")
    assert sorted(os.listdir(tmp_path)) == [offline_retinaface.FILE_NAME]


def test_download_happens_only_when_allowed(tmp_path, monkeypatch):
    import facexlib.utils.misc as misc

    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        with open(dst, "wb") as f:
            f.write(b"x")

    monkeypatch.setattr(misc, "download_url_to_file", fake_download)
    with pytest.raises(fp.MissingWeightsError):
        fp.locate_weight(fp.PARSER, [str(tmp_path)], allow_download=False)
    assert calls == []
    path = fp.locate_weight(fp.PARSER, [str(tmp_path)], allow_download=True)
    assert calls == [fp.PARSER.url] and path == os.path.join(str(tmp_path), "parsing_bisenet.pth")


def test_folders_are_searched_in_order_and_safetensors_is_preferred(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (second / "parsing_bisenet.pth").write_bytes(b"x")
    assert fp.locate_weight(fp.PARSER, [str(first), str(second)]) == str(second / "parsing_bisenet.pth")
    (second / "parsing_bisenet.safetensors").write_bytes(b"x")
    assert fp.locate_weight(fp.PARSER, [str(first), str(second)]).endswith("parsing_bisenet.safetensors")
    (first / "parsing_bisenet.pth").write_bytes(b"x")
    assert fp.locate_weight(fp.PARSER, [str(first), str(second)]) == str(first / "parsing_bisenet.pth")


def test_pickled_weights_load_with_weights_only(tmp_path):
    path = tmp_path / "detection_mobilenet0.25_Final.pth"
    marker = tmp_path / "unpickled"
    path.write_bytes(untrusted_files.pickle_payload(str(marker)))
    with pytest.raises(pickle.UnpicklingError):
        fp.load_state_dict(str(path))
    assert not marker.exists()
    torch.save({"module.a": torch.ones(2)}, path)
    assert list(fp.load_state_dict(str(path))) == ["a"]


def test_face_models_load_from_safetensors_files(tmp_path, monkeypatch):
    from dreamo_testkit.face_fixtures import write_facexlib_folder

    require_detector()
    write_facexlib_folder(str(tmp_path), safetensors=True)
    with NoNetwork(monkeypatch):
        pre = fp.FacePreprocessor.from_folders([str(tmp_path)], "retinaface_mobile0.25")
    assert len(pre.detect(load_rgb("hinton.jpeg"))) == 1


def test_resnet50_detector_file_layout_loads(tmp_path, monkeypatch):
    """The official detector's layout: a resnet50 RetinaFace state dict (random here) saved as facexlib names it."""
    from dreamo_testkit.face_fixtures import random_parser_state

    import warnings

    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = {"module." + k: v for k, v in RetinaFace("resnet50", device="cpu").state_dict().items()}
    torch.save(state, tmp_path / "detection_Resnet50_Final.pth")
    torch.save(random_parser_state(), tmp_path / "parsing_bisenet.pth")
    with NoNetwork(monkeypatch):
        pre = fp.FacePreprocessor.from_folders([str(tmp_path)], "retinaface_resnet50")
    assert pre.detector.backbone == "Resnet50" and pre.detector_name == "retinaface_resnet50"


def test_unknown_detector_name():
    with pytest.raises(ValueError, match="unknown face detector"):
        fp.FacePreprocessor.from_folders(["/nonexistent"], "mtcnn")


def test_tiny_and_gray_images(face):
    rgb = load_rgb("hinton.jpeg")
    assert face.prepare_id(cv2.resize(rgb, (12, 14))).pixels is None
    assert face.prepare_id(np.zeros((1, 1, 3), np.uint8)).pixels is None
    gray = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert face.prepare_id(gray).pixels.shape == (512, 512, 3)


# --- facexlib's real weights: optional (not on PyPI, never downloaded by the tests) ---

REAL_DIR = os.environ.get("DREAMO_FACEXLIB_DIR", "")


def _real(weight):
    path = next((os.path.join(REAL_DIR, n) for n in weight.candidates()
                 if REAL_DIR and os.path.isfile(os.path.join(REAL_DIR, n))), None)
    if path is None:
        pytest.skip(f"facexlib's real {weight.name} is not available offline: set DREAMO_FACEXLIB_DIR to a folder "
                    "holding it to run this check")
    return path


def test_real_bisenet_keeps_the_face_and_whitens_the_background(face):
    parser = fp.build_parser(fp.load_state_dict(_real(fp.PARSER)))
    pre = fp.FacePreprocessor(face.detector, parser, face.detector_name)
    crop = pre.prepare_id(load_rgb("hinton.jpeg"))
    center = crop.labels[230:330, 200:310]
    assert np.isin(center, (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)).mean() > 0.9  # skin, brows, eyes, nose, mouth
    assert (crop.pixels[:8, :8] == 255).all() and (crop.pixels[-8:, -8:] == 255).all()


def test_real_resnet50_detector_finds_one_face_per_portrait():
    network, weight = fp.DETECTORS["retinaface_resnet50"]
    det = fp.build_detector(fp.load_state_dict(_real(weight)), network)
    pre = fp.FacePreprocessor(det, fp.build_parser(), "retinaface_resnet50")
    for name in PORTRAITS:
        assert len(pre.prepare_id(load_rgb(name)).faces) == 1
    for name in NO_FACE:
        assert pre.prepare_id(load_rgb(name)).faces == []


# --- parity with the official sequence: facexlib's own FaceRestoreHelper, then DreamO's parse + white-out ---

def official_id_pixels(rgb, detector, parser, monkeypatch):
    """DreamO's get_align_face written out from its definition, on stock facexlib's FaceRestoreHelper.

    The helper is built by its real constructor with our already-loaded models standing in for its
    init_detection_model/init_parsing_model calls (which would read or download files).
    """
    import facexlib.utils.face_restoration_helper as frh
    from torchvision.transforms.functional import normalize

    monkeypatch.setattr(frh, "init_detection_model", lambda *a, **k: detector)
    monkeypatch.setattr(frh, "init_parsing_model", lambda *a, **k: parser)
    helper = frh.FaceRestoreHelper(upscale_factor=1, face_size=512, crop_ratio=(1, 1),
                                   det_model="retinaface_resnet50", save_ext="png", device=torch.device("cpu"))
    h, w = long_side_size(rgb.shape[0], rgb.shape[1], 1024)
    image = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != rgb.shape[:2] else rgb
    helper.clean_all()
    helper.read_image(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    helper.get_face_landmarks_5(only_center_face=True)
    helper.align_warp_face()
    if len(helper.cropped_faces) == 0:
        return None, None
    aligned = helper.cropped_faces[0]
    x = torch.from_numpy(cv2.cvtColor(aligned, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)).float()[None] / 255.0
    with torch.no_grad():
        parsing = helper.face_parse(normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))[0]
    parsing = parsing.argmax(dim=1, keepdim=True)
    bg = sum(parsing == i for i in [0, 16, 18, 7, 8, 9, 14, 15]).bool()
    out = torch.where(bg, torch.ones_like(x), x)
    pixels = (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return cv2.cvtColor(aligned, cv2.COLOR_BGR2RGB), pixels


@pytest.mark.parametrize("name", PORTRAITS + ("two_faces", "shirt.png"))
def test_matches_the_official_sequence_on_stock_facexlib(face, monkeypatch, name):
    if name == "two_faces":
        rgb = np.full((700, 1700, 3), 255, np.uint8)
        a, b = load_rgb("hinton.jpeg"), load_rgb("woman1.png")
        rgb[50:50 + a.shape[0], 50:50 + a.shape[1]] = a
        rgb[50:50 + b.shape[0], 646:646 + b.shape[1]] = b
    else:
        rgb = load_rgb(name)
    aligned, pixels = official_id_pixels(rgb, face.detector, face.parser, monkeypatch)
    ours = face.prepare_id(rgb)
    if aligned is None:
        assert ours.pixels is None
        return
    assert np.array_equal(ours.aligned, aligned)
    assert np.array_equal(ours.pixels, pixels)
