"""Host-independent DreamO math: token layout, condition embeddings, weight reading, resizing.

Nothing in this package imports ComfyUI, so it is importable and testable anywhere torch is.
"""
