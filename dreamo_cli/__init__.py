"""Command-line tools of the DreamO pack. Host-independent: nothing here imports ComfyUI."""
