"""The pretraining LightningModule's schedule and losses."""

import pytest
import torch

from vatt.lightning import VATTPretrainModule, warmup_cosine


@pytest.mark.parametrize(
    "step,lr",
    [(0, 0.0), (2500, 5e-5), (5000, 1e-4), (252_500, 7.5e-5), (500_000, 5e-5), (600_000, 5e-5)],
)
def test_paper_schedule_warms_up_linearly_then_half_cosine_to_the_floor(step, lr):
    assert warmup_cosine(step, 5000, 500_000, 1e-4, 5e-5) == pytest.approx(lr, abs=1e-12)


def test_module_schedule_and_optimizer_follow_the_config():
    m = VATTPretrainModule(name="tiny", vocab_size=20, scheduler={"warmup_steps": 10, "total_steps": 110, "final_lr": 0.0})
    assert m.lr_at(5) == pytest.approx(0.5e-4) and m.lr_at(60) == pytest.approx(0.5e-4) and m.lr_at(110) == 0.0
    opt = m.configure_optimizers()["optimizer"]
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-7 and group["weight_decay"] == 0.0


def test_loss_is_nce_plus_weighted_mil_nce():
    torch.manual_seed(0)
    m = VATTPretrainModule(name="tiny", vocab_size=20, loss={"mil_nce_weight": 0.3})
    out = {
        "video_va": torch.randn(4, 8), "audio_va": torch.randn(4, 8), "video_vt": torch.randn(4, 6),
        "text_vt": torch.randn(4, 2, 6), "text_mask": torch.tensor([[1, 1], [1, 0], [0, 0], [1, 1]], dtype=torch.bool),
    }
    losses = m.losses(out)
    assert losses["loss"].item() == pytest.approx(losses["loss_nce"].item() + 0.3 * losses["loss_mil_nce"].item())
