"""Per-task preparation of reference pixels (id / ip / style), with the real offline detector where faces matter."""
import cv2
import numpy as np
import pytest
import torch

from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.reference import DreamOPreprocessor, prepare_pixels, to_uint8
from comfyui_dreamo.dreamo_ops.resize import area_size

from dreamo_testkit.face_fixtures import image_tensor, load_rgb, offline_preprocessor


@pytest.fixture(scope="module")
def pre():
    return DreamOPreprocessor(face=offline_preprocessor())


def test_id_gives_the_aligned_whitened_512_face(pre):
    out = prepare_pixels(image_tensor(load_rgb("hinton.jpeg")), "id", 512, preprocessor=pre)
    assert out.task == "id" and out.pixels.shape == (1, 512, 512, 3)
    crop = pre.face.prepare_id(load_rgb("hinton.jpeg"))
    assert np.array_equal(to_uint8(out.pixels)[0], crop.pixels)  # the preview is exactly the prepared face
    assert any("face found" in n and "512x512" in n for n in out.notes)
    assert len(out.detections) == 1


def test_id_ignores_resolution(pre):
    out = prepare_pixels(image_tensor(load_rgb("woman1.png")), "id", 1024, preprocessor=pre)
    assert out.pixels.shape == (1, 512, 512, 3)


def test_id_without_face_falls_back_to_ip_and_says_so(pre):
    rgb = load_rgb("shirt.png")
    out = prepare_pixels(image_tensor(rgb), "id", 512, preprocessor=pre)
    assert out.task == "ip"
    assert out.pixels.shape[1:3] == area_size(rgb.shape[0], rgb.shape[1], 512)
    assert any("no face found" in n and "fell back to ip" in n for n in out.notes)
    assert any("background kept" in n for n in out.notes)  # no mask, alpha or remover: said, not hidden
    assert out.detections == []


def test_strict_mode_errors_when_no_face(pre):
    with pytest.raises(DreamOError) as e:
        prepare_pixels(image_tensor(load_rgb("mountain.png")), "id", 512, preprocessor=pre, id_fallback="strict")
    assert e.value.input_name == "id_fallback" and "no face" in str(e.value)


def test_fallback_uses_the_mask_for_the_ip_path(pre):
    rgb = load_rgb("dress.png")
    mask = torch.zeros(1, rgb.shape[0], rgb.shape[1])
    mask[:, : rgb.shape[0] // 2] = 1.0  # keep the top half only
    out = prepare_pixels(image_tensor(rgb), "id", 256, mask=mask, preprocessor=pre)
    h = out.pixels.shape[1]
    assert out.task == "ip" and any("mask input" in n for n in out.notes)
    assert torch.all(out.pixels[:, h // 2 + 2:] == 1.0) and not torch.all(out.pixels[:, : h // 2 - 2] == 1.0)


def test_id_needs_a_preprocessor_with_face_models():
    img = image_tensor(load_rgb("hinton.jpeg"))
    with pytest.raises(DreamOError) as e:
        prepare_pixels(img, "id", 512)
    assert e.value.input_name == "preprocessor" and "DreamO Preprocessor Loader" in str(e.value)
    with pytest.raises(DreamOError, match="without face models"):
        prepare_pixels(img, "id", 512, preprocessor=DreamOPreprocessor())


def _same_size(*names, size=(600, 520)):
    return torch.cat([image_tensor(cv2.resize(load_rgb(n), size, interpolation=cv2.INTER_AREA)) for n in names])


def test_batch_of_faces_encodes_each_image(pre):
    batch = _same_size("hinton.jpeg", "woman1.png", "man1.png")
    out = prepare_pixels(batch, "id", 512, preprocessor=pre)
    assert out.pixels.shape == (3, 512, 512, 3) and len(out.detections) == 3
    assert sum("(image" in n for n in out.notes) == 3
    assert not torch.equal(out.pixels[0], out.pixels[1])


def test_batch_mixing_faces_and_no_faces_is_a_clear_error(pre):
    with pytest.raises(DreamOError) as e:
        prepare_pixels(_same_size("hinton.jpeg", "mountain.png"), "id", 512, preprocessor=pre)
    assert e.value.input_name == "image" and "2" in str(e.value)


def test_batch_without_faces_falls_back_together(pre):
    out = prepare_pixels(_same_size("shirt.png", "mountain.png"), "id", 512, preprocessor=pre)
    assert out.task == "ip" and out.pixels.shape[0] == 2


def test_grayscale_rgba_tiny_and_huge_images(pre):
    rgb = load_rgb("hinton.jpeg")
    gray = image_tensor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    assert gray.shape[-1] == 1
    assert prepare_pixels(gray, "id", 512, preprocessor=pre).pixels.shape == (1, 512, 512, 3)
    assert prepare_pixels(gray, "style", 256).pixels.shape[-1] == 3

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:, : rgb.shape[1] // 4, 3] = 0  # left quarter transparent
    out = prepare_pixels(image_tensor(rgba), "id", 512, preprocessor=pre)
    assert out.task == "id" and out.pixels.shape == (1, 512, 512, 3)  # alpha dropped for id, like facexlib
    ip = prepare_pixels(image_tensor(rgba), "ip", 512)
    assert any("image alpha" in n for n in ip.notes)
    assert torch.all(ip.pixels[0, :, :10] == 1.0)  # transparent part pasted on white

    tiny = image_tensor(cv2.resize(rgb, (9, 11)))
    with pytest.raises(DreamOError, match=r"^input 'image': the picture is only 9x11 pixels.*Fix: use"):
        prepare_pixels(tiny, "id", 256, preprocessor=pre)
    small = image_tensor(cv2.resize(rgb, (40, 48)))
    out = prepare_pixels(small, "id", 256, preprocessor=pre)  # no face found at that size: used as ip
    assert out.task == "ip" and out.pixels.shape[1:3] == area_size(48, 40, 256)
    assert any(n.startswith("WARNING: the picture is only 40x48 pixels and is enlarged") for n in out.notes)

    huge = image_tensor(cv2.resize(rgb, None, fx=5, fy=5, interpolation=cv2.INTER_LINEAR))  # 2425x2750
    out = prepare_pixels(huge, "id", 512, preprocessor=pre)
    assert out.task == "id" and out.pixels.shape == (1, 512, 512, 3)
    assert any("capped" in n for n in out.notes)
    out = prepare_pixels(huge, "ip", 512)
    assert out.pixels.shape[1:3] == area_size(huge.shape[1], huge.shape[2], 512)


def test_resolution_too_small_for_the_aspect_is_an_error():
    with pytest.raises(DreamOError) as e:
        prepare_pixels(torch.rand(1, 2000, 20, 3), "style", 64)
    assert e.value.input_name == "resolution"


def test_style_is_only_resized_and_ignores_the_mask():
    rgb = load_rgb("mountain.png")
    img = image_tensor(rgb)
    out = prepare_pixels(img, "style", 512, mask=torch.zeros(1, *rgb.shape[:2]))
    h, w = area_size(*rgb.shape[:2], 512)
    expected = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    assert out.task == "style" and np.array_equal(to_uint8(out.pixels)[0], expected)
    assert any("mask input is not used" in n for n in out.notes)


def test_ip_source_order_mask_then_alpha():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 255  # alpha says: keep everything (black)
    mask = torch.zeros(1, 64, 64)  # mask says: drop everything but the first rows
    mask[:, :8] = 1.0
    out = prepare_pixels(image_tensor(rgba), "ip", 64, mask=mask)
    assert torch.all(out.pixels[:, 8:] == 1.0) and torch.all(out.pixels[:, :8] == 0.0)
    assert any("mask input" in n for n in out.notes)
    out = prepare_pixels(image_tensor(rgba), "ip", 64)
    assert torch.all(out.pixels == 0.0) and any("image alpha" in n for n in out.notes)


def test_bad_inputs():
    with pytest.raises(DreamOError, match="IMAGE batch"):
        prepare_pixels(torch.rand(64, 64, 3), "ip", 512)
    with pytest.raises(DreamOError, match="unknown task"):
        prepare_pixels(torch.rand(1, 64, 64, 3), "face", 512)
    with pytest.raises(DreamOError, match="unknown choice"):
        prepare_pixels(torch.rand(1, 64, 64, 3), "id", 512, id_fallback="maybe")


BAD_IMAGES = {  # name -> (image, regex the message must match after "input 'image': "; the node prefixes its id)
    "zero_by_zero": (torch.zeros(1, 0, 0, 3), r"the picture is empty \(0x0 pixels\)"),
    "one_by_one": (torch.rand(1, 1, 1, 3), r"the picture is only 1x1 pixels"),
    "nan": (torch.full((1, 64, 64, 3), float("nan")), r"the picture has NaN or infinite values"),
    "inf": (torch.full((1, 64, 64, 3), float("inf")), r"the picture has NaN or infinite values"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
@pytest.mark.parametrize("task", ["ip", "style"])
def test_bad_images_name_the_input_and_the_fix(name, task):
    image, problem = BAD_IMAGES[name]
    with pytest.raises(DreamOError, match=rf"^input 'image': {problem}.* Fix: \w"):
        prepare_pixels(image, task, 256)


def test_sixteen_bit_and_out_of_range_pictures_are_brought_to_the_unit_range():
    rgb = torch.rand(1, 64, 48, 3)
    sixteen = rgb * (65535.0 / 255.0)  # what LoadImage gives for a 16-bit PNG (it divides by 255)
    out = prepare_pixels(sixteen, "style", 64)
    assert any("16-bit" in n for n in out.notes)
    assert torch.equal(out.pixels, prepare_pixels(rgb, "style", 64).pixels)
    wild = prepare_pixels(rgb * 400.0 - 1.0, "style", 64)
    assert any("clipped to 0..1" in n for n in wild.notes) and 0.0 <= wild.pixels.min() <= wild.pixels.max() <= 1.0


BAD_MASKS = {  # name -> (mask for a 1x64x48 picture, regex)
    "all_zeros": (torch.zeros(1, 64, 48), r"the mask is all zeros"),
    "other_aspect": (torch.ones(1, 64, 64).index_fill_(1, torch.tensor([0]), 0.0), r"the mask is 64x64 but the picture is 48x64 \(another aspect ratio\)"),
    "nan": (torch.full((1, 64, 48), float("nan")), r"the mask has NaN or infinite values"),
    "batch": (torch.ones(2, 64, 48), r"2 masks for 1 pictures"),
}


@pytest.mark.parametrize("name", sorted(BAD_MASKS))
def test_bad_masks_name_the_input_and_the_fix(name):
    mask, problem = BAD_MASKS[name]
    with pytest.raises(DreamOError, match=rf"^input 'mask': {problem}.* Fix: \w"):
        prepare_pixels(torch.rand(1, 64, 48, 3), "ip", 64, mask=mask)


def test_a_mask_of_the_same_aspect_at_another_size_is_resized_and_said():
    image = torch.rand(1, 64, 48, 3)
    mask = torch.zeros(1, 32, 24)
    mask[:, :16] = 1.0  # top half
    out = prepare_pixels(image, "ip", 64, mask=mask)
    assert any("mask: resized from 24x32 to the picture's 48x64" in n for n in out.notes)
    assert torch.all(out.pixels[:, 40:] == 1.0) and not torch.all(out.pixels[:, :24] == 1.0)


def test_loadimage_default_masks_are_never_misreported():
    """LoadImage gives a 64x64 all-zero mask for a picture without transparency; inverted it is all ones. Neither
    matches the picture's size or aspect; neither may be reported as 'background replaced'."""
    image = torch.rand(1, 90, 160, 3)  # 16:9, unlike the 64x64 default mask
    kept = prepare_pixels(image, "ip", 64, mask=torch.ones(1, 64, 64))
    assert any("the mask input keeps the whole picture" in n for n in kept.notes)
    assert not any("replaced" in n for n in kept.notes)
    assert torch.equal(kept.pixels, prepare_pixels(image, "ip", 64).pixels)
    with pytest.raises(DreamOError, match=r"input 'mask': the mask is all zeros"):
        prepare_pixels(image, "ip", 64, mask=torch.zeros(1, 64, 64))


def test_an_8k_picture_is_brought_down_to_the_reference_size():
    big = torch.rand(1, 4320, 7680, 3)
    out = prepare_pixels(big, "style", 512)
    assert out.pixels.shape[1:3] == area_size(4320, 7680, 512) and out.pixels.shape[1] * out.pixels.shape[2] <= 512 * 512
    assert any("resized 7680x4320 ->" in n for n in out.notes) and not any("WARNING" in n for n in out.notes)


def test_a_subject_already_on_white_is_said_to_be_so_not_warned_about():
    """A product shot on white (DreamO's own sample pictures) needs no remover: the node says it is used as is, and no
    'background kept' warning is shown; 85% white border pixels (a subject touching the frame, a busy scene) are not
    enough, nor one picture of a batch that is not on white."""
    on_white = np.full((120, 90, 3), 250, np.uint8)
    on_white[30:100, 20:70] = (160, 40, 30)
    out = prepare_pixels(image_tensor(on_white), "ip", 64)
    assert any("already on white" in n for n in out.notes) and not any("background kept" in n for n in out.notes)
    touching = on_white.copy()
    touching[:, :14] = (20, 20, 20)  # the left side and a strip of the top and bottom rows are dark: ~85% white
    assert np.mean(np.concatenate([touching[0], touching[-1], touching[:, 0], touching[:, -1]]).min(-1) >= 235) < 0.9
    out = prepare_pixels(image_tensor(touching), "ip", 64)
    assert any("background kept" in n for n in out.notes)
    batch = torch.cat([image_tensor(on_white), image_tensor(touching)])
    assert any("background kept" in n for n in prepare_pixels(batch, "ip", 64).notes)
    out = prepare_pixels(image_tensor(on_white), "style", 64)
    assert not any("on white" in n for n in out.notes)  # style references keep their background by design
