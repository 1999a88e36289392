"""NCE and MIL-NCE against an independent float64 reference, and the 2-process local loss."""

import math
import os

import pytest
import torch
import torch.distributed as dist

from conftest import TAU, ref_mil_nce, ref_nce, start_ranks
from vatt.losses import mil_nce_loss, nce_loss

def test_nce_matches_reference():
    torch.manual_seed(0)
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    assert nce_loss(x, y).item() == pytest.approx(ref_nce(x, y), rel=1e-5)


def test_nce_masked_rows_are_neither_anchors_nor_negatives():
    torch.manual_seed(1)
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    mask = torch.tensor([True, False, True, True, False, True])
    got = nce_loss(x, y, mask=mask).item()
    assert got == pytest.approx(ref_nce(x, y, mask), rel=1e-5)
    # same as dropping those rows altogether
    assert got == pytest.approx(nce_loss(x[mask], y[mask]).item(), rel=1e-5)


def test_nce_of_identical_well_separated_pairs_is_near_log_two():
    # each anchor's positive appears in its row and its column: loss -> log 2 as negatives vanish
    x = torch.eye(4) * 3
    assert nce_loss(x, x).item() == pytest.approx(math.log(2), abs=1e-4)


def test_mil_nce_matches_reference_with_caption_mask():
    torch.manual_seed(2)
    v, t = torch.randn(5, 8), torch.randn(5, 3, 8)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    assert mil_nce_loss(v, t, text_mask=mask).item() == pytest.approx(ref_mil_nce(v, t, mask), rel=1e-5)
    assert mil_nce_loss(v, t).item() == pytest.approx(ref_mil_nce(v, t), rel=1e-5)


def test_mil_nce_without_any_caption_is_zero_with_finite_gradient():
    v = torch.randn(3, 8, requires_grad=True)
    t = torch.randn(3, 2, 8, requires_grad=True)
    loss = mil_nce_loss(v, t, text_mask=torch.zeros(3, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(v.grad).all() and torch.isfinite(t.grad).all()


def test_losses_compute_in_float32_under_autocast():
    torch.manual_seed(3)
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    t = torch.randn(4, 2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nce = nce_loss(x.bfloat16(), y.bfloat16())
        mil = mil_nce_loss(x.bfloat16(), t.bfloat16())
    assert nce.dtype == torch.float32 and mil.dtype == torch.float32
    assert nce.item() == pytest.approx(ref_nce(x.bfloat16(), y.bfloat16()), rel=1e-4)


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        nce_loss(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\[B, K, D\]"):
        mil_nce_loss(torch.randn(4, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="text_mask"):
        mil_nce_loss(torch.randn(4, 8), torch.randn(4, 2, 8), text_mask=torch.ones(4, dtype=torch.bool))


# ---------------------------------------------------------------- distributed local loss

WORLD = 2


def _global_batch():
    g = torch.Generator().manual_seed(7)
    n = 8
    x, y, v = (torch.randn(n, 6, generator=g) for _ in range(3))
    t = torch.randn(n, 3, 6, generator=g)
    audio_mask = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1], dtype=torch.bool)
    # rank 0 holds 3 clips with captions, rank 1 only 1
    text_mask = torch.tensor(
        [[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool
    )
    return x, y, v, t, audio_mask, text_mask


def _losses_and_grads(x, y, v, t, audio_mask, text_mask):
    leaves = [a.clone().requires_grad_() for a in (x, y, v, t)]
    x, y, v, t = leaves
    nce = nce_loss(x, y, mask=audio_mask)
    mil = mil_nce_loss(v, t, text_mask=text_mask)
    (nce + mil).backward()
    return nce.detach(), mil.detach(), [a.grad for a in leaves]


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        batch = _global_batch()
        per = batch[0].shape[0] // WORLD
        local = [a[rank * per : (rank + 1) * per] for a in batch]
        nce, mil, grads = _losses_and_grads(*local)
        torch.save({"nce": nce, "mil": mil, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_process_local_loss_equals_single_process_loss_and_gradient(tmp_path):
    start_ranks(_worker, (str(tmp_path / "init"), str(tmp_path)), WORLD)
    batch = _global_batch()
    nce, mil, grads = _losses_and_grads(*batch)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert torch.stack([r["nce"] for r in ranks]).mean().item() == pytest.approx(nce.item(), rel=1e-5)
    assert torch.stack([r["mil"] for r in ranks]).mean().item() == pytest.approx(mil.item(), rel=1e-5)
    per = batch[0].shape[0] // WORLD
    for r, res in enumerate(ranks):
        for g_rank, g_single in zip(res["grads"], grads):
            # DDP averages over ranks: divide each rank's gradient by the world size
            assert torch.allclose(g_rank / WORLD, g_single[r * per : (r + 1) * per], atol=1e-6, rtol=1e-4)
