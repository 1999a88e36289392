"""Building blocks: DropToken, position tables, T5 buckets, patch embeddings."""

import math

import pytest
import torch

from vatt.models import (
    AudioSegmentEmbed,
    DropToken,
    RelativePositionBias,
    SpatioTemporalPositions,
    TemporalPositions,
    VideoPatchEmbed,
    keep_count,
    resize_table,
    t5_relative_position_bucket,
)


def _tokens(b=4, n=20, c=3):
    # token j of sample i holds the value 1000*i + j in every channel, so kept tokens are identifiable
    ids = torch.arange(b)[:, None] * 1000 + torch.arange(n)[None, :]
    return ids[..., None].expand(b, n, c).float()


@pytest.mark.parametrize("rate,n,expected", [(0.5, 1568, 784), (0.5, 1200, 600), (0.25, 1568, 1176), (0.75, 1200, 300), (0.3, 7, 5), (0.0, 9, 9)])
def test_keep_count_is_round_of_kept_fraction(rate, n, expected):
    assert keep_count(n, rate) == expected


def test_droptoken_keeps_a_subset_per_sample():
    torch.manual_seed(0)
    x = _tokens()
    drop = DropToken(0.5, per_sample=True).train()
    y = drop(x)
    assert y.shape == (4, 10, 3)
    kept = [set(y[i, :, 0].tolist()) for i in range(4)]
    for i, k in enumerate(kept):
        assert len(k) == 10  # no duplicates
        assert k <= set(x[i, :, 0].tolist())  # only this sample's own tokens
        assert sorted(y[i, :, 0].tolist()) == y[i, :, 0].tolist()  # original order kept
    offsets = [frozenset(v - 1000 * i for v in k) for i, k in enumerate(kept)]
    assert len(set(offsets)) > 1  # samples draw different subsets


def test_droptoken_shared_subset_is_the_same_for_every_sample():
    torch.manual_seed(0)
    y = DropToken(0.5, per_sample=False).train()(_tokens())
    offsets = {tuple((y[i, :, 0] - 1000 * i).tolist()) for i in range(4)}
    assert len(offsets) == 1


def test_droptoken_is_identity_in_eval_and_at_rate_zero():
    x = _tokens()
    assert torch.equal(DropToken(0.5).eval()(x), x)
    assert torch.equal(DropToken(0.0).train()(x), x)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_droptoken_rejects_rates_outside_zero_one(rate):
    with pytest.raises(ValueError, match="fraction"):
        DropToken(rate)


def test_droptoken_draws_indices_on_the_tokens_device():
    x = _tokens().to("meta")
    assert DropToken(0.5).train()(x).device.type == "meta"


def test_resize_table_matches_hand_computed_linear_interpolation():
    table = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    # half-pixel centres: output i samples input position (i + 0.5) * 4/8 - 0.5, clamped to [0, 3]
    expected = [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]
    assert resize_table(table, 8, "linear")[:, 0].tolist() == pytest.approx(expected)
    # downsampling 4 -> 2: positions 0.5 and 2.5
    assert resize_table(table, 2, "linear")[:, 0].tolist() == pytest.approx([0.5, 2.5])
    assert resize_table(table, 4) is table


def test_resize_table_by_default_is_the_authors_cubic_spline():
    """Rows at j/n, read at i/m: the natural cubic spline through them, linear past the last row."""
    from scipy.interpolate import CubicSpline

    torch.manual_seed(0)
    table = torch.randn(8, 3)
    assert torch.allclose(resize_table(table, 4), table[[0, 2, 4, 6]], atol=1e-6)  # shrinking keeps rows 0, 2, 4, 6
    assert torch.allclose(resize_table(table, 16)[::2], table, atol=1e-6)  # the curve passes through every row
    grown = resize_table(table, 11).numpy()
    knots, queries = torch.arange(8).numpy() / 8, torch.arange(11).numpy() / 11
    inside = queries <= knots[-1]
    natural = CubicSpline(knots, table.numpy(), bc_type="natural")(queries[inside])
    assert abs(grown[inside] - natural).max() < 1e-5
    last, slope = natural[-1], CubicSpline(knots, table.numpy(), bc_type="natural")(knots[-1], 1)
    beyond = queries[~inside]
    assert abs(grown[~inside] - (table[-1].numpy() + slope * (beyond[:, None] - knots[-1]))).max() < 1e-5
    table.requires_grad_(True)
    resize_table(table, 11).sum().backward()
    assert table.grad is not None and torch.isfinite(table.grad).all()  # fine-tuning at another size trains it
    with pytest.raises(ValueError, match="position_resize='cubic'"):
        resize_table(table, 5, "cubic")


def test_video_positions_add_layernormed_sum_of_three_tables():
    pos = SpatioTemporalPositions(dim=4, grid=(2, 3, 3), drop=0.0)
    with torch.no_grad():
        for p in (pos.temporal, pos.vertical, pos.horizontal):
            p.normal_()
    x = torch.zeros(1, 18, 4)
    y = pos(x, (2, 3, 3))
    # token (t=1, h=2, w=0) sits at index 1*9 + 2*3 + 0 = 15
    s = pos.temporal[1] + pos.vertical[2] + pos.horizontal[0]
    ref = (s - s.mean()) / torch.sqrt(s.var(unbiased=False) + 1e-6)
    assert torch.allclose(y[0, 15], ref, atol=1e-5)


def test_video_positions_interpolate_to_a_larger_grid():
    pos = SpatioTemporalPositions(dim=4, grid=(2, 3, 3), drop=0.0)
    y = pos(torch.zeros(2, 4 * 5 * 5, 4), (4, 5, 5))
    assert y.shape == (2, 100, 4)
    assert torch.isfinite(y).all()


def test_text_positions_slice_and_refuse_longer_inputs():
    pos = TemporalPositions(dim=4, length=16, drop=0.0, interpolate=False)
    assert pos(torch.zeros(1, 5, 4), (5,)).shape == (1, 5, 4)
    with pytest.raises(ValueError, match="max_words"):
        pos(torch.zeros(1, 17, 4), (17,))


@pytest.mark.parametrize(
    "rel,bucket",
    [
        (0, 0),  # same position
        (-1, 1),  # key one step before the query
        (1, 17),  # key one step after: the second half of the buckets
        (-7, 7),  # last exact bucket
        (-8, 8),  # first log bucket: 8 + floor(log(1)/log(8)*8)
        (-20, 11),  # 8 + floor(log(2.5)/log(8)*8) = 8 + floor(3.52)
        (20, 27),
        (-63, 15),  # 8 + floor(log(7.875)/log(8)*8) = 8 + 7
        (-64, 15),  # clamped to the last bucket
        (-500, 15),
        (500, 31),
    ],
)
def test_t5_bucket_values(rel, bucket):
    got = t5_relative_position_bucket(torch.tensor([rel]), bidirectional=True, num_buckets=32, max_distance=64)
    assert got.item() == bucket


def test_t5_bucket_log_formula_for_every_distance():
    n = torch.arange(8, 200)
    got = t5_relative_position_bucket(-n, True, 32, 64)
    ref = [min(15, 8 + int(math.log(d / 8) / math.log(64 / 8) * 8)) for d in n.tolist()]
    assert got.tolist() == ref


def test_relative_position_bias_is_a_per_head_table_lookup():
    rpb = RelativePositionBias(num_heads=3)
    bias = rpb(5, torch.device("cpu"))
    assert bias.shape == (1, 3, 5, 5)
    # query 4, key 0: relative position -4 -> bucket 4
    assert torch.equal(bias[0, :, 4, 0], rpb.embedding.weight[4])
    assert torch.equal(bias[0, :, 0, 4], rpb.embedding.weight[16 + 4])


def test_video_patch_embed_orders_tokens_t_h_w():
    emb = VideoPatchEmbed(dim=2, patch_size=(2, 4, 4))
    with torch.no_grad():
        emb.proj.weight.zero_()
        emb.proj.bias.zero_()
        emb.proj.weight[0, 0] = 1.0  # channel 0 of the token sums its patch of colour 0
    x = torch.zeros(1, 3, 4, 8, 12)
    x[0, 0, 2:4, 4:8, 8:12] = 1.0  # patch (t=1, h=1, w=2)
    tokens, grid = emb(x)
    assert grid == (2, 2, 3)
    assert tokens.shape == (1, 12, 2)
    hot = tokens[0, :, 0].nonzero().flatten().tolist()
    assert hot == [1 * 6 + 1 * 3 + 2]
    assert tokens[0, hot[0], 0].item() == pytest.approx(2 * 4 * 4)


def test_video_patch_embed_rejects_indivisible_clips():
    with pytest.raises(ValueError, match="video_patch_size"):
        VideoPatchEmbed(dim=8)(torch.zeros(1, 3, 6, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        VideoPatchEmbed(dim=8)(torch.zeros(3, 4, 32, 32))


def test_audio_segment_embed_cuts_consecutive_segments():
    emb = AudioSegmentEmbed(dim=1, segment=4)
    with torch.no_grad():
        emb.proj.weight.fill_(1.0)
        emb.proj.bias.zero_()
    tokens, grid = emb(torch.arange(12.0)[None])
    assert grid == (3,)
    assert tokens[0, :, 0].tolist() == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7, 8 + 9 + 10 + 11]
    with pytest.raises(ValueError, match="audio_patch_size"):
        emb(torch.zeros(1, 10))
