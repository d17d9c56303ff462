"""The pack's own socket types and the numbered inputs nodes share: every node module takes them from here."""
from __future__ import annotations

from ..dreamo_ops.token_layout import MAX_SLOTS

DREAMO_TYPE = "DREAMO"
"""DreamO's learned embeddings (DreamOLoader, DreamOStageLoader) for Apply, Text Encode and Routing."""
DREAMO_REF_TYPE = "DREAMO_REF"
"""One encoded reference (DreamORefEncode) for Apply's and Text Encode's ref_k."""
PREPROCESSOR_TYPE = "DREAMO_PREPROCESSOR"
"""Face models and a background remover (DreamOPreprocessorLoader) for DreamORefEncode."""

REF_INPUTS = tuple(f"ref_{i}" for i in range(1, MAX_SLOTS + 1))
"""The reference sockets of DreamOApply and DreamOTextEncode: ref_k is slot k, [ref#k] in the prompt."""
