import pytest

from minivar import scales
from minivar.tokenizer.quantizer import phi_table


def test_256px_schedule_counts():
    pns = scales.get_schedule("256")
    assert scales.num_tokens(pns) == 680
    assert scales.offsets(pns)[1:] == [1, 5, 14, 30, 55, 91, 155, 255, 424, 680]
    assert scales.num_tokens(scales.get_schedule("512")) == 2240


def test_masks_pair_counts_match_the_papers_numbers():
    pns = scales.get_schedule("256")
    assert int(scales.block_causal_mask(pns).sum()) == 286_434
    assert int(scales.block_diagonal_mask(pns).sum()) == 110_468
    ids = scales.scale_ids(pns)
    assert ids[0] == 0 and ids[1:5].eq(1).all() and ids[-256:].eq(9).all()


def test_mask_semantics_small():
    m = scales.block_causal_mask((1, 2))
    # token 0 (scale 0) sees only itself; scale-1 tokens see everything
    assert m[0].tolist() == [True, False, False, False, False]
    assert m[1:].all()
    d = scales.block_diagonal_mask((1, 2))
    assert not d[0, 1:].any() and d[1:, 1:].all() and not d[1:, 0].any()
    bias = scales.mask_to_bias(m)
    assert bias[0, 1] == float("-inf") and bias[1, 0] == 0


def test_phi_table_matches_official_float64_ties():
    assert phi_table(10, 4) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert phi_table(10, 1) == [0] * 10
    assert sorted(set(phi_table(10, 10))) == list(range(10))


@pytest.mark.parametrize("bad", [(2, 1), (1,), (0, 1, 2), (1, 2, 2), (1, 2.5)])
def test_bad_schedules_raise(bad):
    with pytest.raises(scales.ScheduleError):
        scales.validate(bad)


def test_schedule_must_end_at_latent_side():
    with pytest.raises(scales.ScheduleError, match="last scale must equal the latent side"):
        scales.validate((1, 2, 3), latent_side=4)
    with pytest.raises(scales.ScheduleError, match="unknown schedule preset"):
        scales.get_schedule("1024px")
