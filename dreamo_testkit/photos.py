"""The one lookup of the test photos (faces, garments, styles) for the whole suite.

Photos live outside the repo: `$DREAMO_REFS_DIR`, else `../shared/data/refs` beside the clone. A user's clone has
neither, so a test that needs a missing photo is skipped with a reason naming the variable; CI sets
`DREAMO_REQUIRE_REFS=1` (`.ci/run`), which turns that skip into a failure. Nothing is ever substituted for a
missing photo.
"""
from __future__ import annotations

import os

from . import REPO
ENV = "DREAMO_REFS_DIR"


def refs_dir() -> str:
    return os.environ.get(ENV) or os.path.join(os.path.dirname(REPO), "shared", "data", "refs")


def missing_reason(names) -> str | None:
    """None when every photo is there, else the sentence a skip (or a CI failure) gives."""
    folder = refs_dir()
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if not missing:
        return None
    return (f"test photo(s) {', '.join(missing)} not found in {folder}: set {ENV} to the folder of the sample "
            "photos (faces, garments, styles) to run this test")


def photo(name: str) -> str:
    """The path of one test photo; skips the calling test (fails it under DREAMO_REQUIRE_REFS=1) when missing."""
    require(name)
    return os.path.join(refs_dir(), name)


def require(*names: str) -> None:
    import pytest

    reason = missing_reason(names)
    if reason is None:
        return
    if os.environ.get("DREAMO_REQUIRE_REFS") == "1":
        pytest.fail(f"{reason} (DREAMO_REQUIRE_REFS=1: CI must run the photo tests)", pytrace=False)
    pytest.skip(reason)
