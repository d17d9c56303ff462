import pytest
import torch

from comfyui_dreamo.dreamo_ops.token_layout import position_ids, reference_layout, tokens_along


def test_references_sit_on_the_diagonal_after_the_image():
    layout = reference_layout((8, 10), [(6, 4), (4, 8)], slots=(2, 5))
    assert (layout.image_rows, layout.image_cols) == (4, 5)
    a, b = layout.refs
    assert (a.slot, a.rows, a.cols, a.row_offset, a.col_offset) == (2, 3, 2, 4, 5)
    assert (b.slot, b.rows, b.cols, b.row_offset, b.col_offset) == (5, 2, 4, 7, 7)
    assert layout.total_count == 20 + 6 + 8


def test_odd_latents_round_up_like_padding():
    assert tokens_along(7) == 4 and tokens_along(8) == 4 and tokens_along(1) == 1
    layout = reference_layout((7, 9), [(4, 4)], slots=(1,))
    assert (layout.image_rows, layout.image_cols) == (4, 5)
    assert (layout.refs[0].row_offset, layout.refs[0].col_offset) == (4, 5)


def test_position_ids_match_an_independent_construction():
    layout = reference_layout((4, 6), [(2, 4), (6, 2)], slots=(1, 9))
    grids = [(2, 3, 0, 0), (1, 2, 2, 3), (3, 1, 3, 5)]
    expected = []
    for rows, cols, r0, c0 in grids:
        for r in range(rows):
            for c in range(cols):
                expected.append([0, r0 + r, c0 + c])
    assert torch.equal(position_ids(layout), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("slots", [(0,), (10,), (1, 1)])
def test_bad_slots_are_refused(slots):
    with pytest.raises(ValueError, match="slot"):
        reference_layout((4, 4), [(2, 2)] * len(slots), slots)


def test_slot_count_must_match_references():
    with pytest.raises(ValueError, match="2 reference latents but 1 slots"):
        reference_layout((4, 4), [(2, 2), (2, 2)], (1,))
