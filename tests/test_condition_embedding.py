import torch

from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings, condition_embedding
from comfyui_dreamo.dreamo_ops.token_layout import reference_layout


def embeddings(hidden=6):
    g = torch.Generator().manual_seed(0)
    return DreamOEmbeddings(task=torch.randn(2, hidden, generator=g), index=torch.randn(10, hidden, generator=g),
                            placeholders=None)


def test_image_tokens_get_task_1_and_reference_tokens_task_0_plus_their_slot():
    emb = embeddings()
    layout = reference_layout((4, 4), [(2, 4), (4, 2)], slots=(3, 1))
    out = condition_embedding(emb, layout)
    assert out.shape == (4 + 2 + 2, 6)
    for row in range(4):
        assert torch.equal(out[row], emb.task[1])
    for row in (4, 5):
        assert torch.equal(out[row], emb.task[0] + emb.index[3])
    for row in (6, 7):
        assert torch.equal(out[row], emb.task[0] + emb.index[1])


def test_dtype_follows_the_request_and_embeddings_move():
    emb = embeddings()
    layout = reference_layout((2, 2), [(2, 2)], slots=(1,))
    assert condition_embedding(emb, layout, dtype=torch.bfloat16).dtype == torch.bfloat16
    moved = emb.to(dtype=torch.float64)
    assert moved.task.dtype == torch.float64 and emb.task.dtype == torch.float32 and moved.placeholders is None
