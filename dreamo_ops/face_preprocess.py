"""DreamO's identity preprocessing with stock facexlib: detect, align to the FFHQ template, parse, white out.

The official order (DreamO's `get_align_face`, the same as PuLID's):
1. cap the longest side at 1024 (area filter),
2. RetinaFace on the BGR image at its own size, confidence > 0.97, five landmarks per face,
3. keep the face whose box centre is nearest the image centre,
4. similarity transform (rotation, uniform scale, shift; LMEDS) of its landmarks onto the 512x512 FFHQ
   template, warp with a gray border,
5. BiSeNet on the RGB crop scaled to [0, 1] and normalised with ImageNet's mean and std,
6. pixels labelled background, ears, earring, neck, necklace, cloth or hat painted white; no resize after.

facexlib's `FaceRestoreHelper` would also build (and download) its ParseNet parser, so the models are built here
from facexlib's classes and loaded from local files only; nothing is downloaded unless asked. Nothing in this
module imports ComfyUI. facexlib itself is imported when a model is built (it takes seconds to import).
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .face_weights import DETECTORS, PARSER, WeightFile  # noqa: F401 - the tables live there (no torch)
from .resize import long_side_size, resize_uint8
from .weights import WeightFileError

LONG_SIDE = 1024
FACE_SIZE = 512
DETECTION_THRESHOLD = 0.97
# facexlib's five FFHQ landmarks for a 512x512 face: eye (image left), eye (image right), nose tip,
# mouth corner (image left), mouth corner (image right).
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)
BORDER_RGB = (132, 133, 135)  # facexlib's gray border, (135, 133, 132) in BGR
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# BiSeNet (CelebAMask-HQ) labels painted white: 0 background, 7/8 ears, 9 earring, 14 neck, 15 necklace,
# 16 cloth, 18 hat. Skin, brows, eyes, glasses, nose, mouth, lips and hair (17) are kept.
WHITE_LABELS = (0, 7, 8, 9, 14, 15, 16, 18)
PARSER_CLASSES = 19



class MissingWeightsError(FileNotFoundError):
    """A weight file is not in any of the searched folders (and downloading was not allowed)."""

    def __init__(self, weight: WeightFile, folders):
        self.weight = weight
        self.folders = list(folders)
        where = self.folders[0] if self.folders else "models/facexlib"
        super().__init__(f"'{weight.name}' was not found in {self.folders}. Download it from {weight.url} "
                         f"(facexlib's release) into {where}, or switch 'download_missing_weights' on to let the "
                         "pack fetch it once.")


class DownloadFailedError(OSError):
    """Downloading a missing weight file was allowed but failed (no network, HTTP error, disk full)."""

    def __init__(self, weight: WeightFile, folder: str, cause: Exception):
        self.weight = weight
        self.folder = folder
        reason = getattr(cause, "reason", None) or cause
        super().__init__(f"the download of '{weight.name}' from {weight.url} failed: {reason} "
                         f"({type(cause).__name__}); nothing was written to {folder}")


def locate_weight(weight: WeightFile, folders, allow_download: bool = False) -> str:
    """Path of `weight` in the first folder that has it. Downloads into folders[0] only when allowed."""
    folders = [f for f in folders if f]
    for folder in folders:
        for name in weight.candidates():
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    if not allow_download or not folders:
        raise MissingWeightsError(weight, folders)
    from facexlib.utils.misc import load_file_from_url

    try:
        return load_file_from_url(weight.url, save_dir=folders[0], progress=True)
    except Exception as e:  # URLError, HTTPError, timeouts, a full disk: all say "the download failed"
        raise DownloadFailedError(weight, folders[0], e) from e


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a weight file: safetensors, or a pickle read with weights_only=True. Strips 'module.'."""
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file

        sd = load_file(path, device="cpu")
    else:
        with warnings.catch_warnings():
            # torch >= 2.6 warns when a file was pickled with a protocol newer than its default (facexlib's own
            # files and ones saved by newer torch): a remark on the format, not a problem with the file.
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d+ in the checkpoint",
                                    category=UserWarning)
            sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"'{os.path.basename(path)}' does not hold a plain state dict of tensors.")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def load_model(path: str, network: str | None):
    """facexlib's RetinaFace (`network` 'resnet50' / 'mobile0.25') or BiSeNet parser (`network` None) built from a
    weight file, or WeightFileError naming the file and what is wrong. The node and `dreamo-doctor` both use it."""
    name = os.path.basename(path)
    what = "BiSeNet face parser" if network is None else f"RetinaFace-{network} face detector"
    try:
        sd = load_state_dict(path)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        if "weights only" in str(e).lower():  # torch's refusal of a pickled object that is not a tensor
            raise WeightFileError(f"'{name}' holds Python objects besides tensors; it was refused without running "
                                  "them (torch weights_only load). Use facexlib's original file.") from e
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise WeightFileError(f"'{name}' is not a readable weight file (truncated or corrupted?): {first}") from e
    try:
        return build_detector(sd, network) if network is not None else build_parser(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise WeightFileError(f"'{name}' does not fit facexlib's {what} (another model?): {detail}") from e


def build_detector(state_dict: dict[str, torch.Tensor], network: str = "resnet50"):
    """facexlib's RetinaFace ('resnet50' or 'mobile0.25') on the CPU with the given weights."""
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():  # facexlib builds its resnet50 with torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        model = RetinaFace(network_name=network, half=False, device=torch.device("cpu"))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def build_parser(state_dict: dict[str, torch.Tensor] | None = None):
    """facexlib's BiSeNet face parser (19 labels) on the CPU; random weights when none are given."""
    from facexlib.parsing.bisenet import BiSeNet

    model = BiSeNet(num_class=PARSER_CLASSES)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) x, y in the order of FFHQ_TEMPLATE_512

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def central_face(faces: list[Face], height: int, width: int) -> int:
    """Index of the face whose box centre is nearest the image centre (facexlib's only_center_face)."""
    c = np.array([width / 2, height / 2])
    return int(np.argmin([np.linalg.norm(np.array(f.center) - c) for f in faces]))


def similarity_to_template(landmarks: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """2x3 similarity transform taking five landmarks onto the FFHQ template at `size` (facexlib's choice)."""
    template = FFHQ_TEMPLATE_512 * (size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float64), template, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("the face landmarks are degenerate (no similarity transform fits them)")
    return matrix


def warp_face(rgb: np.ndarray, matrix: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    return cv2.warpAffine(rgb, matrix, (size, size), borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB)


def white_out(face_rgb: np.ndarray, labels: np.ndarray, white_labels=WHITE_LABELS) -> np.ndarray:
    """Paint white every pixel whose parsing label is in `white_labels`."""
    drop = np.isin(labels, white_labels)
    out = face_rgb.copy()
    out[drop] = 255
    return out


def draw_faces(rgb: np.ndarray, faces: list[Face], chosen: int | None) -> np.ndarray:
    """The image with every detected face boxed: the one used in green, the others in red."""
    out = np.ascontiguousarray(rgb.copy())
    thick = max(2, round(max(rgb.shape[:2]) / 300))
    for i, f in enumerate(faces):
        color = (0, 220, 0) if i == chosen else (230, 0, 0)
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        for x, y in f.landmarks:
            cv2.circle(out, (int(round(x)), int(round(y))), thick, color, -1)
    return out


@dataclass
class IdCrop:
    """The outcome of identity preprocessing for one image."""
    image: np.ndarray  # (h, w, 3) uint8 RGB the detector saw (longest side capped at 1024)
    faces: list[Face] = field(default_factory=list)
    chosen: int | None = None
    matrix: np.ndarray | None = None  # 2x3 transform from `image` to the aligned crop
    aligned: np.ndarray | None = None  # (512, 512, 3) uint8, before white-out
    labels: np.ndarray | None = None  # (512, 512) parsing labels
    pixels: np.ndarray | None = None  # (512, 512, 3) uint8: what DreamO sees; None when no face was found


class FacePreprocessor:
    """RetinaFace + BiSeNet kept on `offload_device`, moved to the compute device only while they run."""

    def __init__(self, detector, parser, detector_name: str = "retinaface_resnet50",
                 offload_device: torch.device | str = "cpu"):
        self.detector = detector
        self.parser = parser
        self.detector_name = detector_name
        self.offload_device = torch.device(offload_device)
        self._move(self.offload_device)

    @classmethod
    def from_folders(cls, folders, detector_name: str = "retinaface_resnet50", allow_download: bool = False,
                     offload_device: torch.device | str = "cpu") -> "FacePreprocessor":
        if detector_name not in DETECTORS:
            raise ValueError(f"unknown face detector '{detector_name}' (known: {', '.join(DETECTORS)})")
        network, weight = DETECTORS[detector_name]
        det_path = locate_weight(weight, folders, allow_download)
        parse_path = locate_weight(PARSER, folders, allow_download)
        detector = load_model(det_path, network)
        parser = load_model(parse_path, None)
        return cls(detector, parser, detector_name, offload_device)

    def _move(self, device: torch.device) -> None:
        self.detector.to(device)
        self.detector.device = device  # facexlib's RetinaFace sends its inputs to this device
        self.detector.mean_tensor = self.detector.mean_tensor.to(device)
        self.parser.to(device)

    @contextmanager
    def on(self, device: torch.device | str | None):
        """Run the models on `device`, then move them back to the offload device."""
        device = self.offload_device if device is None else torch.device(device)
        self._move(device)
        try:
            yield device
        finally:
            self._move(self.offload_device)

    @torch.no_grad()
    def detect(self, rgb: np.ndarray, threshold: float = DETECTION_THRESHOLD) -> list[Face]:
        """Faces in an (h, w, 3) uint8 RGB image, on whatever device the models are on now."""
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        rows = self.detector.detect_faces(bgr, conf_threshold=threshold)
        return [Face(box=tuple(float(v) for v in r[:4]), score=float(r[4]),
                     landmarks=np.asarray(r[5:15], np.float64).reshape(5, 2)) for r in rows]

    @torch.no_grad()
    def parse(self, face_rgb: np.ndarray, device: torch.device) -> np.ndarray:
        """BiSeNet labels (h, w) of an aligned RGB face, input normalised with ImageNet's mean and std."""
        x = torch.from_numpy(np.ascontiguousarray(face_rgb)).to(device).permute(2, 0, 1)[None].float() / 255.0
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        logits = self.parser((x - mean) / std)[0]
        return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()

    def prepare_id(self, rgb: np.ndarray, device: torch.device | str | None = None) -> IdCrop:
        """Official identity preprocessing of one (H, W, 3) uint8 RGB image."""
        image = resize_uint8(rgb, long_side_size(rgb.shape[0], rgb.shape[1], LONG_SIDE))
        crop = IdCrop(image=image)
        with self.on(device) as dev:
            crop.faces = self.detect(image)
            if not crop.faces:
                return crop
            crop.chosen = central_face(crop.faces, image.shape[0], image.shape[1])
            crop.matrix = similarity_to_template(crop.faces[crop.chosen].landmarks)
            crop.aligned = warp_face(image, crop.matrix)
            crop.labels = self.parse(crop.aligned, dev)
        crop.pixels = white_out(crop.aligned, crop.labels)
        return crop
