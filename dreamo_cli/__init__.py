"""Command-line tools of the DreamO pack (no ComfyUI imports): `dreamo-client` queues DreamO jobs on running
ComfyUI servers, `dreamo-doctor` checks an install's model files, `dreamo-download` fetches the missing official
ones."""
