"""facexlib's weight files the pack uses: the detector choices and the parser, with their release URLs.

Only names and URLs (no torch, no facexlib), so `dreamo-doctor` and `dreamo-download` can list the files without
the heavy packages; `face_preprocess` builds the models.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

_RELEASES = "https://github.com/xinntao/facexlib/releases/download"


@dataclass(frozen=True)
class WeightFile:
    name: str  # the file name facexlib uses; a .safetensors file of the same stem is accepted too
    url: str  # facexlib's release asset

    def candidates(self) -> tuple[str, ...]:
        stem = os.path.splitext(self.name)[0]
        return (stem + ".safetensors", self.name)


# detector choice -> (facexlib network name, weight file)
DETECTORS = {
    "retinaface_resnet50": ("resnet50", WeightFile("detection_Resnet50_Final.pth",
                                                   f"{_RELEASES}/v0.1.0/detection_Resnet50_Final.pth")),
    "retinaface_mobile0.25": ("mobile0.25", WeightFile("detection_mobilenet0.25_Final.pth",
                                                       f"{_RELEASES}/v0.1.0/detection_mobilenet0.25_Final.pth")),
}
PARSER = WeightFile("parsing_bisenet.pth", f"{_RELEASES}/v0.2.0/parsing_bisenet.pth")
