"""dreamo_ops.model_files: the header-only content checks agree with the loaders the nodes use."""
import pytest
import torch

from dreamo_testkit import lora_fixtures as lf
from comfyui_dreamo.dreamo_ops import model_files as mf
from comfyui_dreamo.dreamo_ops.lora_formats import check_against_model, read_lora_file
from comfyui_dreamo.dreamo_ops.weights import WeightFileError

TINY = mf.FluxDims(hidden=lf.TINY.hidden, mlp_hidden=lf.TINY.mlp, double_blocks=lf.TINY.depth,
                   single_blocks=lf.TINY.depth_single, in_channels=lf.TINY.in_channels, context=lf.TINY.context,
                   vec=lf.TINY.vec)


def test_flux_shapes_match_an_independent_table():
    assert TINY.module_shapes() == lf.flux_shapes(lf.TINY)
    dev = lf.Dims(hidden=3072, mlp=12288, depth=19, depth_single=38, in_channels=64, context=4096, vec=768, out=64)
    assert mf.FLUX1_DEV.module_shapes() == lf.flux_shapes(dev)


@pytest.mark.parametrize("make", [lf.xlabs, lf.diffusers, lf.bfl, lf.kohya])
def test_header_check_agrees_with_the_stage_loader_parse(make, tmp_path):
    tensors, _ = make(seed=1)
    path = lf.save(tmp_path / "lora.safetensors", tensors)
    described = mf.check_lora(path, TINY)
    lora = read_lora_file(path, TINY.hidden, TINY.mlp_hidden)  # what DreamOStageLoader reads
    check_against_model(lora, lf.flux_shapes(lf.TINY))
    assert f"{len(lora.targets)} weights" in described and "/".join(lora.formats) in described


def test_header_check_fails_where_the_loader_fails(tmp_path):
    tensors, _ = lf.xlabs(seed=2)
    key = next(k for k in tensors if k.endswith("up.weight"))
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])  # fits no weight
    path = lf.save(tmp_path / "odd.safetensors", tensors)
    with pytest.raises(WeightFileError) as header:
        mf.check_lora(path, TINY)
    with pytest.raises(WeightFileError) as loader:
        check_against_model(read_lora_file(path, TINY.hidden, TINY.mlp_hidden), lf.flux_shapes(lf.TINY))
    assert str(header.value) == str(loader.value) and "'odd.safetensors' does not fit" in str(header.value)


def test_alpha_is_read_for_real(tmp_path):
    tensors, _ = lf.kohya(seed=3, alpha=2.0)
    path = lf.save(tmp_path / "k.safetensors", tensors)
    assert "kohya" in mf.check_lora(path, TINY)


def test_sft_extension_and_pickles(tmp_path):
    tensors, _ = lf.xlabs(seed=4)
    assert "xlabs" in mf.check_lora(lf.save(tmp_path / "lora.sft", tensors), TINY)
    torch.save(tensors, tmp_path / "lora.pt")
    with pytest.raises(WeightFileError, match="pickle-based"):
        mf.read_tensor_infos(str(tmp_path / "lora.pt"))
