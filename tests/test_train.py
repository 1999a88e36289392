"""Hydra configs and the training entry point: every experiment, sweeps, DDP on CPU, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from vatt.train import CONFIG_DIR, train

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))
# paper-size models on small inputs so one CPU step is quick
SMALL_INPUT = ["model.input.num_frames=4", "model.input.image_size=32", "model.input.sample_rate=3200"]


def make_cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(
            "train",
            overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", *overrides],
        )
    return cfg


def small_data(demo_root: Path) -> list[str]:
    # demo=false: use the fixture's small copy as it is (demo=true would regenerate the full-size set)
    return [f"data.path={demo_root}", "data.demo=false", "data.num_workers=0", "data.persistent_workers=false"]


def test_experiment_list_is_complete():
    assert {"demo", "vatt_bbs", "vatt_mbs", "vatt_lbs", "vatt_ma_medium"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_fast_dev_runs(tmp_path, demo_root, experiment):
    extra = [] if experiment == "demo" else ["data=demo", *SMALL_INPUT]
    cfg = make_cfg(tmp_path, [f"experiment={experiment}", "debug=fdr", *extra, *small_data(demo_root)])
    assert cfg.model.name == {"demo": "tiny"}.get(experiment, experiment.removeprefix("vatt_"))
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "val/v2a_R@10" in metrics


@pytest.mark.parametrize("experiment", ["vatt_bbs", "vatt_mbs", "vatt_lbs", "vatt_ma_medium"])
def test_paper_experiments_without_data_say_how_to_provide_it(tmp_path, experiment):
    cfg = make_cfg(tmp_path, [f"experiment={experiment}"])
    assert cfg.model.input.num_frames == 32 and cfg.model.input.sample_rate == 48000
    assert cfg.model.optimizer.lr == 1e-4 and cfg.model.scheduler.warmup_steps == 5000
    with pytest.raises(Exception, match=f"data.path is not set \\(experiment {experiment}.*data.path="):
        train(cfg)


def test_unknown_config_keys_are_rejected(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="droptokn"):
        make_cfg(tmp_path, ["model.droptokn=0.5"])


class StepRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.first_step: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step is None:
            self.first_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _fit_with(cfg: DictConfig, recorder: StepRecorder) -> dict[str, float]:
    import vatt.train as vt

    original = vt._instantiate_all
    vt._instantiate_all = lambda group: original(group) + ([recorder] if group is cfg.get("callbacks") else [])
    try:
        return train(cfg)
    finally:
        vt._instantiate_all = original


def test_short_training_lowers_the_loss(tmp_path, demo_root):
    cfg = make_cfg(
        tmp_path,
        [*small_data(demo_root), "data.batch_size=8", "trainer.max_epochs=15", "logger=none", "callbacks=none",
         "model.droptoken=0.0", "model.backbone.dropout=0.0", "model.backbone.attn_dropout=0.0",
         "data.augment.color_prob=0", "data.augment.scale_jitter_prob=0", "data.augment.flip_prob=0",
         "model.scheduler.warmup_steps=2", "trainer.check_val_every_n_epoch=100"],
    )
    rec = StepRecorder()
    _fit_with(cfg, rec)
    assert len(rec.losses) == 30
    first, last = sum(rec.losses[:4]) / 4, sum(rec.losses[-4:]) / 4
    assert last < 0.8 * first


def test_resume_from_last_checkpoint_continues_at_the_saved_step(tmp_path, demo_root):
    base = [*small_data(demo_root), "data.batch_size=4", "trainer.max_epochs=10", "trainer.check_val_every_n_epoch=100"]
    first = make_cfg(tmp_path / "a", [*base, "trainer.max_steps=4"])
    train(first)
    ckpt = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4
    second = make_cfg(tmp_path / "b", [*base, "trainer.max_steps=6", f"ckpt_path={ckpt}"])
    rec = StepRecorder()
    _fit_with(second, rec)
    assert rec.first_step == 4 and len(rec.losses) == 2


def test_bf16_mixed_precision_runs_on_cpu(tmp_path, demo_root):
    cfg = make_cfg(tmp_path, ["debug=fdr", "trainer.precision=bf16-mixed", *small_data(demo_root)])
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "vatt.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_on_two_cpu_processes_runs(tmp_path, demo_root):
    proc = _run(["trainer=ddp_cpu", "debug=fdr", f"paths.log_dir={tmp_path}", *small_data(demo_root)], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "distributed_backend=gloo" in out and "All distributed processes registered. Starting with 2 processes" in out


def test_make_train_forwards_every_override():
    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "train", "experiment=demo", "model.droptoken=0.25", "trainer.max_epochs=2"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if "vatt.train" in ln)
    for arg in ("experiment=demo", "model.droptoken=0.25", "trainer.max_epochs=2"):
        assert arg in line


@pytest.mark.slow
def test_compiled_model_trains_one_step(tmp_path, demo_root):
    cfg = make_cfg(tmp_path, ["debug=fdr", "model.compile=true", *small_data(demo_root)])
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))


def test_fsdp_config_wraps_transformer_blocks(tmp_path):
    import hydra

    from vatt.models.layers import Block

    cfg = make_cfg(tmp_path, ["trainer=fsdp", "trainer.strategy.activation_checkpointing=true"])
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert type(strategy).__name__ == "FSDPStrategy"
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.sync_batchnorm
