"""The facts behind docs/deviations.md "timm: where it is used and where our code is kept".

Each test runs timm's candidate and our code on the same inputs. timm is not a
dependency of the package, so the whole file is skipped where it is not installed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")
from timm.data import Mixup  # noqa: E402
from timm.layers import Attention as TimmAttention, Mlp as TimmMlp, PatchDropout, resample_abs_pos_embed  # noqa: E402
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy  # noqa: E402
from timm.scheduler import CosineLRScheduler  # noqa: E402

from vatt.lightning.finetune import VATTFinetuneModule  # noqa: E402
from vatt.models.layers import Attention, DropToken, Mlp, resize_table  # noqa: E402
from vatt.schedules import warmup_cosine  # noqa: E402

LAM = 0.37


class _Stub:
    """Just enough of a VATTFinetuneModule for its own ``training_step`` and ``loss`` to run."""

    modality = "video"
    _epoch_skipped = 0

    def __init__(self, num_classes: int, multilabel: bool, label_smoothing: float = 0.1) -> None:
        self.num_classes, self.multilabel, self.label_smoothing, self.mixup_alpha = num_classes, multilabel, label_smoothing, 5.0
        self.logits = torch.randn(8, num_classes)

    def __call__(self, x):
        self.seen_x = x
        return self.logits[: x.shape[0]]

    def loss(self, logits, target):
        self.seen_y = target
        return VATTFinetuneModule.loss(self, logits, target)

    def log(self, *args, **kwargs):
        pass

    def optimizers(self):
        return SimpleNamespace(param_groups=[{"lr": 0.0}])


def _our_step(monkeypatch, stub, x, y, perm):
    """Our fine-tuning step with its Beta draw fixed at LAM and its permutation fixed at ``perm``."""
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self, shape=torch.Size(): torch.tensor(LAM))
    monkeypatch.setattr(torch, "randperm", lambda n, device=None: perm)
    loss = VATTFinetuneModule.training_step(stub, {stub.modality: x, "label": y}, 0)
    monkeypatch.undo()
    return loss


def _timm_mixup(**kwargs):
    mixup = Mixup(mixup_alpha=5.0, **kwargs)
    mixup._params_per_batch = lambda: (LAM, False)  # the same lam as ours
    return mixup


def test_timm_mixup_with_our_lam_and_its_flip_gives_our_inputs_and_loss(monkeypatch):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 4, 8, 8), torch.randint(0, 10, (8,))
    stub = _Stub(10, multilabel=False)
    ours = _our_step(monkeypatch, stub, x, y, torch.arange(8).flip(0))  # timm's partner is the reversed batch
    xt, yt = _timm_mixup(label_smoothing=0.1, num_classes=10)(x.clone(), y)
    assert torch.equal(stub.seen_x, xt)  # bit-identical mixed clips
    # timm mixes smoothed one-hots, we smooth the mixed one-hot: the same affine map, rounding apart
    assert (stub.seen_y * 0.9 + 0.01 - yt).abs().max() < 1e-6
    assert abs(float(ours) - float(SoftTargetCrossEntropy()(stub.logits, yt))) < 1e-5


def test_timm_multilabel_mixup_matches_ours_only_without_its_default_smoothing(monkeypatch):
    torch.manual_seed(1)
    x, y = torch.randn(8, 1280), (torch.rand(8, 10) < 0.2).float()
    stub = _Stub(10, multilabel=True)
    stub.modality = "audio"
    _our_step(monkeypatch, stub, x, y, torch.arange(8).flip(0))
    _, plain = _timm_mixup(label_smoothing=0.0, num_classes=10, multi_label=True)(x.clone(), y)
    assert torch.equal(stub.seen_y, plain)
    _, smoothed = _timm_mixup(num_classes=10, multi_label=True)(x.clone(), y)  # timm's default label_smoothing=0.1
    assert abs(float((smoothed - stub.seen_y).abs().max()) - 0.05) < 1e-6  # labels pulled 0.05 towards 0.5


def test_timm_mixup_refuses_an_odd_batch_ours_does_not(monkeypatch):
    torch.manual_seed(2)
    x, y = torch.randn(7, 3, 4, 8, 8), torch.randint(0, 10, (7,))
    with pytest.raises(AssertionError, match="even"):
        Mixup(mixup_alpha=5.0, num_classes=10)(x.clone(), y)
    stub = _Stub(10, multilabel=False)
    assert torch.isfinite(_our_step(monkeypatch, stub, x, y, torch.randperm(7)))


def test_timm_label_smoothing_ce_is_torch_cross_entropy():
    torch.manual_seed(3)
    logits, y = torch.randn(16, 400), torch.randint(0, 400, (16,))
    ours = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert abs(float(LabelSmoothingCrossEntropy(0.1)(logits, y) - ours)) < 1e-6


def _table(n: int, d: int = 768, seed: int = 0) -> torch.Tensor:
    """A table as the authors initialise one: N(0, d^-1/2)."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * d ** -0.5


def _timm_1d(table: torch.Tensor, m: int) -> torch.Tensor:
    return resample_abs_pos_embed(table[None], [m, 1], old_size=[table.shape[0], 1], num_prefix_tokens=0)[0]


def test_timm_bicubic_resampling_is_far_from_the_authors_spline():
    t = _table(14)
    gap = (_timm_1d(t, 20) - resize_table(t, 20)).abs().max() / t.abs().max()
    assert 0.40 < gap < 0.50  # 0.449 of the table's largest entry on 14 -> 20 rows (224 -> 320 px)
    # 14x14 -> 20x20: the factorised tables summed, as SpatioTemporalPositions adds them
    v, h = _table(14, seed=1), _table(14, seed=2)
    grid = (v[:, None] + h[None]).reshape(1, 196, -1)
    timm_grid = resample_abs_pos_embed(grid, [20, 20], old_size=[14, 14], num_prefix_tokens=0)[0].reshape(20, 20, -1)
    ours = resize_table(v, 20)[:, None] + resize_table(h, 20)[None]
    diff = (timm_grid - ours).abs()
    assert 0.08 < float(diff.max()) < 0.11  # 0.094 against table entries of rms 0.051
    assert 0.2 < float(diff.pow(2).mean().sqrt() / grid.pow(2).mean().sqrt()) < 0.35  # rms 27 % of the table's
    # shrinking: the spline keeps rows 0, 2, 4, 6; timm's antialiased bicubic averages neighbours
    t8 = _table(8, seed=3)
    assert torch.allclose(resize_table(t8, 4), t8[[0, 2, 4, 6]], atol=1e-6)
    assert (_timm_1d(t8, 4) - t8[[0, 2, 4, 6]]).abs().max() > 0.5 * t8.abs().max()


def test_timm_attention_and_mlp_take_our_weights_but_not_the_t5_scale():
    torch.manual_seed(4)
    ours, theirs = Attention(64, 4).eval(), TimmAttention(64, 4, qkv_bias=True).eval()
    theirs.load_state_dict(ours.state_dict())  # same names and layout: qkv (fused), proj
    x, bias = torch.randn(2, 10, 64), torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
        assert torch.equal(ours(x, bias), theirs(x, attn_mask=bias))
        t5 = Attention(64, 4, scale=1.0).eval()
        t5.load_state_dict(ours.state_dict())
        assert (t5(x) - theirs(x)).abs().max() > 0.1  # timm's fused path always scales by head_dim^-0.5
        mlp, timm_mlp = Mlp(64, 256).eval(), TimmMlp(64, 256).eval()
        timm_mlp.load_state_dict(mlp.state_dict())
        assert torch.equal(mlp(x), timm_mlp(x))


def test_timm_patch_dropout_floors_the_kept_count_droptoken_rounds():
    x = torch.randn(1, 1568, 8)  # MBS at 32 x 224^2
    assert PatchDropout(0.3, num_prefix_tokens=0).train()(x).shape[1] == 1097  # int(1568 * 0.7)
    assert DropToken(0.3).train()(x).shape[1] == 1098  # round(1568 * 0.7)
    assert PatchDropout(0.5, num_prefix_tokens=0).train()(x).shape[1] == DropToken(0.5).train()(x).shape[1] == 784


def test_timm_cosine_scheduler_with_warmup_prefix_is_our_warmup_cosine():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.005)
    sched = CosineLRScheduler(opt, t_initial=97500, lr_min=0.0, warmup_t=2500, warmup_lr_init=0.0,
                              warmup_prefix=True, t_in_epochs=False)
    gap = max(abs(sched._get_lr(t)[0] - 0.005 * warmup_cosine(t, 2500, 100000)) for t in range(0, 100001, 7))
    assert gap < 1e-15
