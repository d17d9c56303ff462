"""The DIFFUSION_MODEL wrapper and post_input patch, driven without the host."""
import pytest
import torch

from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings
from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.flux_wrapper import ConditionEmbeddingPatch, DreamOFluxWrapper
from comfyui_dreamo.dreamo_ops.token_layout import position_ids, reference_layout

HIDDEN = 4


class FakeFlux:
    patch_size = 2


class FakeExecutor:
    class_obj = FakeFlux()

    def __init__(self):
        self.seen = None

    def __call__(self, *args, **kwargs):
        self.seen = (args, kwargs)
        return "out"


def emb():
    g = torch.Generator().manual_seed(0)
    return DreamOEmbeddings(task=torch.randn(2, HIDDEN, generator=g), index=torch.randn(10, HIDDEN, generator=g),
                            placeholders=None)


def call(wrapper, refs, options, **kwargs):
    ex = FakeExecutor()
    x = torch.zeros(1, 16, 4, 4)
    assert wrapper(ex, x, torch.zeros(1), torch.zeros(1, 3, 8), None, None, refs, None, options, **kwargs) == "out"
    return ex.seen


def test_calls_without_dreamo_references_pass_through_untouched():
    options = {"patches": {"post_input": ["other"]}}
    args, kwargs = call(DreamOFluxWrapper(emb()), None, options, dreamo_ref_slots=(1,))
    assert args[7] is options and "dreamo_ref_slots" not in kwargs
    args, kwargs = call(DreamOFluxWrapper(emb()), [torch.zeros(1, 16, 2, 2)], options, ref_latents_method="uxo")
    assert args[7] is options and kwargs == {"ref_latents_method": "uxo"}


def test_dreamo_calls_get_a_post_input_patch_on_a_copy_of_the_options():
    options = {"patches": {"post_input": ["other"]}, "keep": 1}
    args, kwargs = call(DreamOFluxWrapper(emb()), [torch.zeros(1, 16, 2, 2)], options,
                        dreamo_ref_slots=(4,), ref_latents_method="uxo")
    new = args[7]
    assert options == {"patches": {"post_input": ["other"]}, "keep": 1}
    assert new["keep"] == 1 and new["patches"]["post_input"][0] == "other"
    patch = new["patches"]["post_input"][1]
    assert isinstance(patch, ConditionEmbeddingPatch) and patch.layout.refs[0].slot == 4
    assert "dreamo_ref_slots" not in kwargs


def test_mismatched_slots_and_wrong_method_are_explained():
    with pytest.raises(DreamOError, match="2 reference latents but DreamO slots for 1"):
        call(DreamOFluxWrapper(emb()), [torch.zeros(1, 16, 2, 2)] * 2, {}, dreamo_ref_slots=(1,),
             ref_latents_method="uxo")
    with pytest.raises(DreamOError, match="method 'offset'.*FluxKontext|method 'offset'"):
        call(DreamOFluxWrapper(emb()), [torch.zeros(1, 16, 2, 2)], {}, dreamo_ref_slots=(1,),
             ref_latents_method="offset")


def test_patch_adds_embeddings_and_checks_the_sequence():
    e = emb()
    layout = reference_layout((4, 4), [(2, 2)], (2,))
    patch = ConditionEmbeddingPatch(e, layout)
    img = torch.randn(2, 5, HIDDEN)
    ids = position_ids(layout).unsqueeze(0).repeat(2, 1, 1)
    out = patch({"img": img, "txt": "t", "img_ids": ids, "txt_ids": "i"})
    assert out["txt"] == "t" and out["txt_ids"] == "i"
    assert torch.equal(out["img"][:, :4], img[:, :4] + e.task[1])
    assert torch.equal(out["img"][:, 4], img[:, 4] + (e.task[0] + e.index[2]))
    with pytest.raises(DreamOError, match="expected 5 image-stream tokens"):
        patch({"img": torch.randn(2, 6, HIDDEN), "txt": None, "img_ids": None, "txt_ids": None})
    shifted = ids.clone()
    shifted[:, 4, 1] += 1
    with pytest.raises(DreamOError, match="diagonal positions"):  # a new run: checked again
        ConditionEmbeddingPatch(e, layout)({"img": img, "txt": None, "img_ids": shifted, "txt_ids": None})


def test_to_moves_a_copy_and_ignores_dtypes():
    w = DreamOFluxWrapper(emb())
    assert w.to(torch.float16) is w and w.embeddings.task.dtype == torch.float32
    moved = w.to(torch.device("cpu"))
    assert isinstance(moved, DreamOFluxWrapper) and moved is not w


def test_positions_are_checked_once_per_layout_in_a_run():
    e = emb()
    layout = reference_layout((4, 4), [(2, 2)], (1,))
    ids = position_ids(layout).unsqueeze(0)
    shifted = ids.clone()
    shifted[:, 4, 2] += 3
    verified = set()
    first = ConditionEmbeddingPatch(e, layout, verified)
    with pytest.raises(DreamOError):
        first({"img": torch.zeros(1, 5, HIDDEN), "txt": None, "img_ids": shifted, "txt_ids": None})
    assert verified == set()  # a failed check is not remembered
    first({"img": torch.zeros(1, 5, HIDDEN), "txt": None, "img_ids": ids, "txt_ids": None})
    assert verified == {layout}
    later = ConditionEmbeddingPatch(e, layout, verified)  # a later step of the same run: no device compare
    later({"img": torch.zeros(1, 5, HIDDEN), "txt": None, "img_ids": shifted, "txt_ids": None})
