"""Command-line tools of the DreamO pack (no ComfyUI imports): `dreamo-doctor` checks an install's model files,
`dreamo-download` fetches the missing official ones."""
