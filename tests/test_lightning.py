"""The pretraining LightningModule: schedule, losses against float64 references, validation retrieval."""

import json
import shutil
import subprocess
import sys

import lightning as L
import pytest
import torch

from conftest import ref_mil_nce, ref_nce
from vatt.lightning import VATTPretrainModule, warmup_cosine
from vatt.lightning.pretrain import validation_retrieval


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


def test_loss_is_nce_plus_weighted_mil_nce_against_a_float64_reference():
    torch.manual_seed(0)
    tau, lam = 0.1, 0.3
    m = VATTPretrainModule(name="tiny", vocab_size=20, loss={"temperature": tau, "mil_nce_weight": lam}).eval()
    text = torch.randint(1, 20, (4, 3, 5))
    text[1, 2] = 0  # a missing caption
    text[2] = 0  # a clip without captions
    clip_mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=torch.bool)  # caption 1 of clip 3 off
    batch = {"video": torch.rand(4, 3, 8, 64, 64) * 2 - 1, "audio": torch.randn(4, 12_800), "text": text,
             "text_mask": clip_mask}
    out = m(batch)
    losses = m.losses(out)
    mask = (text != 0).any(-1) & clip_mask  # by hand: a caption counts when it has words and is not masked
    nce = ref_nce(out["video_va"].detach(), out["audio_va"].detach(), tau=tau)
    mil = ref_mil_nce(out["video_vt"].detach(), out["text_vt"].detach(), mask=mask, tau=tau)
    assert losses["loss_nce"].item() == pytest.approx(nce, rel=1e-5)
    assert losses["loss_mil_nce"].item() == pytest.approx(mil, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(nce + lam * mil, rel=1e-5)


# --------------------------------------------------------------------------- validation retrieval

E = torch.eye(4)


def _outputs():
    """4 clips (ids 0-3) and a repeat of clip 2, as a distributed sampler pads the last rank."""
    video_va = E[[0, 1, 2, 3, 2]]
    audio_va = E[[0, 1, 0, 3, 0]]  # clip 2's audio looks like clip 0's
    video_vt = E[[0, 1, 2, 3, 2]]
    text_vt = E[[0, 0, 3, 3, 3]]  # clip 1 has no caption; its (ignored) text matches clip 0
    has_text = torch.tensor([1, 0, 1, 1, 1.0])
    return {"index": torch.tensor([0, 1, 2, 3, 2.0]), "video_va": video_va, "audio_va": audio_va,
            "video_vt": video_vt, "text_vt": text_vt, "has_text": has_text}


# By hand (ties count against the query): video->audio, cosine similarities of one-hot vectors:
#   v0 ties with a0 and a2 -> rank 2; v1 -> 1; v2 = e2 scores 0 against every audio -> rank 4; v3 -> 1.
# text->video over captioned clips {0, 2, 3}: t0 = e0 -> 1; t2 = e3 scores 0 with v2, 1 with v3 -> 3; t3 -> 1.
EXPECTED = {
    "val/v2a_R@1": 0.5, "val/v2a_R@5": 1.0, "val/v2a_R@10": 1.0, "val/v2a_MedR": 1.5,
    "val/t2v_R@1": 2 / 3, "val/t2v_R@5": 1.0, "val/t2v_R@10": 1.0, "val/t2v_MedR": 1.0,
    # 4 clips, 3 with a caption: R@10 by chance is 1 (a smoke test, and the log says so)
    "val/num_clips": 4.0, "val/v2a_chance_R@10": 1.0, "val/t2v_chance_R@10": 1.0,
}


def test_validation_retrieval_by_hand_counts_each_clip_once_and_only_captioned_clips_for_text():
    metrics = validation_retrieval(_outputs())
    assert metrics == pytest.approx(EXPECTED)


class _Crafted(VATTPretrainModule):
    """The real validation path fed with known embeddings instead of the backbone's."""

    def forward(self, batch):
        return {"video_va": batch["va"], "audio_va": batch["aa"], "video_vt": batch["vt"], "text_vt": batch["tt"],
                "text_mask": batch["tm"]}


def test_validation_step_uses_caption_zero_and_its_mask_and_logs_the_hand_computed_metrics():
    o = _outputs()
    garbage = torch.full((5, 4), 0.5)
    batches = []
    for rows in ([0, 1], [2, 3], [4]):
        batches.append({
            "video": torch.zeros(len(rows), 1), "index": o["index"][rows].long(),
            "va": o["video_va"][rows], "aa": o["audio_va"][rows], "vt": o["video_vt"][rows],
            # caption 0 is the window's own; caption 1 is a neighbour that retrieval must ignore
            "tt": torch.stack([o["text_vt"][rows], garbage[rows]], dim=1),
            "tm": torch.stack([o["has_text"][rows].bool(), torch.ones(len(rows), dtype=torch.bool)], dim=1),
        })
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the batches as they are
    (metrics,) = trainer.validate(_Crafted(name="tiny", vocab_size=20), dataloaders=loader, verbose=False)
    assert {k: v for k, v in metrics.items() if k in EXPECTED} == pytest.approx(EXPECTED)


VALIDATE = """
import json, sys
import lightning as L
from vatt.data.pretrain import PretrainDataModule
from vatt.lightning import VATTPretrainModule

root, out, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
clip = dict(num_frames=8, fps=10, image_size=64, sample_rate=16000)
dm = PretrainDataModule(root, clip=clip, batch_size=2, val_batch_size=2, num_workers=0)
dm.prepare_data()
L.seed_everything(0)
m = VATTPretrainModule(name="tiny", vocab_size=dm.vocab_size, input=dict(clip, max_words=16))
trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
(metrics,) = trainer.validate(m, datamodule=dm, verbose=False)
if trainer.is_global_zero:
    json.dump(metrics, open(out, "w"))
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_validation_metrics_equal_the_single_process_ones(tmp_path, demo_root):
    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    rows = (data / "val.jsonl").read_text().splitlines()
    (data / "val.jsonl").write_text("\n".join(rows[:7]) + "\n")  # 7 clips on 2 ranks: the sampler repeats one
    script = tmp_path / "validate.py"
    script.write_text(VALIDATE)
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"metrics{devices}.json"
        proc = subprocess.run([sys.executable, str(script), str(data), str(out), str(devices)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = {k: v for k, v in json.loads(out.read_text()).items() if "R@" in k or "MedR" in k}
    assert set(results[1]) == {f"val/{d}_{m}" for d in ("v2a", "t2v")
                               for m in ("R@1", "R@5", "R@10", "MedR", "chance_R@10")}
    assert results[1]["val/v2a_chance_R@10"] == 1.0  # 7 clips (counted once on 2 ranks): R@10 is certain
    assert results[2] == pytest.approx(results[1], abs=1e-6)
