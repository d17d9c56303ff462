"""ComfyUI caches node outputs and hands the same objects to every consumer: DreamO's nodes and sampling must
never change a model, conditioning, DREAMO or DREAMO_REF value they receive."""
import copy

import pytest
import torch

pytestmark = pytest.mark.host


def snapshot(value):
    """A deep copy of the tensors and containers of a value, for comparing after the fact."""
    return copy.deepcopy(value)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_apply_routing_and_sampling_leave_their_inputs_untouched():
    import comfy.patcher_extension
    from dreamo_testkit import tiny_models
    from dreamo_testkit.host_sampling import sample_once
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings
    from comfyui_dreamo.dreamo_ops.reference import DreamOReference
    from comfyui_dreamo.nodes.apply import DreamOApply
    from comfyui_dreamo.nodes.routing import DreamORouting

    patcher = tiny_models.flux_patcher(seed=4)
    weights = {k: v.clone() for k, v in patcher.model.diffusion_model.state_dict().items()}
    t = tiny_models.embedding_tensors(seed=5)
    dreamo = DreamOEmbeddings(task=t["dreamo_task_embedding.weight"], index=t["dreamo_idx_embedding.weight"],
                              placeholders=t["dreamo_t5_embedding.weight"][-10:])
    refs = {1: DreamOReference(latent=torch.randn(1, 16, 6, 6), task="ip", pixels=torch.rand(1, 48, 48, 3)),
            2: DreamOReference(latent=torch.randn(1, 16, 4, 6), task="id", pixels=torch.rand(1, 32, 48, 3))}
    positive, negative = tiny_models.conditioning(seed=6), tiny_models.conditioning(seed=7)
    region = torch.zeros(1, 40, 40)
    region[:, :, :20] = 1.0
    before = snapshot((positive, negative, dreamo.task, dreamo.index, dreamo.placeholders,
                       [(r.latent, r.pixels, r.task, r.notes) for r in refs.values()], region))
    wrappers_before = copy.copy(patcher.wrappers)

    model, pos = DreamOApply().apply(patcher, positive, dreamo, ref_1=refs[1], ref_2=refs[2])["result"]
    routed, _ = DreamORouting().route(model, "hard", 4.0, True, 0.0, 1.0, "all", True, region_1=region)
    sample_once(routed, torch.zeros(1, 16, 8, 8), pos, negative, cfg=2.0)
    sample_once(routed, torch.zeros(1, 16, 8, 8), pos, negative, cfg=2.0)  # twice: nothing accumulates

    after = (positive, negative, dreamo.task, dreamo.index, dreamo.placeholders,
             [(r.latent, r.pixels, r.task, r.notes) for r in refs.values()], region)
    assert same(before, after)
    assert patcher.wrappers == wrappers_before  # DreamO's wrappers live on the clones only
    assert not patcher.model_options["transformer_options"].get("patches")
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    assert "dreamo" not in patcher.wrappers.get(kind, {}) and "dreamo" in routed.wrappers.get(kind, {})
    for k, v in patcher.model.diffusion_model.state_dict().items():
        assert torch.equal(v, weights[k]), k
