"""Run folders, resuming and checkpoints: the root resolver, resume_argv, restore_config, read_checkpoint, LastCheckpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from vatt.checkpoint import CheckpointError, read_checkpoint
from vatt.errors import UserError
from vatt.lightning.callbacks import LastCheckpoint
from vatt.runs import restore_config, resume_argv
from vatt.run_setup import check_hardware
from vatt.runs import CONFIG_DIR
from vatt.train import train


def compose_train(overrides: list[str], hydra_config: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        return compose("train", overrides=overrides, return_hydra_config=hydra_config)


# --------------------------------------------------------------------------- folders


def test_run_and_sweep_folders_resolve_before_hydra_starts_a_job(tmp_path, monkeypatch):
    # Hydra resolves hydra.sweep.dir before any job exists: it must not need ${hydra:...}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VATT_ROOT", raising=False)
    cfg = compose_train([], hydra_config=True)
    sweep = OmegaConf.select(cfg, "hydra.sweep.dir")
    assert sweep.startswith(f"{tmp_path}/logs/train/multiruns/")
    assert OmegaConf.select(cfg, "hydra.run.dir").startswith(f"{tmp_path}/logs/train/runs/")
    assert cfg.paths.data_dir == f"{tmp_path}/data"
    monkeypatch.setenv("VATT_ROOT", str(tmp_path / "elsewhere"))
    cfg = compose_train([], hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.sweep.dir").startswith(f"{tmp_path}/elsewhere/logs/train/multiruns/")


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return run


def test_resume_argv_points_hydra_at_the_checkpoints_run_folder(tmp_path):
    run = _run_folder(tmp_path)
    ckpt = f"ckpt_path={run}/checkpoints/last.ckpt"
    out = resume_argv(["debug=limit", ckpt])
    assert out[:2] == ["debug=limit", ckpt]
    assert out[2] == f"hydra.run.dir='{run}'"
    assert out[3].startswith("hydra.output_subdir=.hydra/resume_") and len(out) == 4


@pytest.mark.parametrize(
    "argv",
    [
        ["debug=limit"],  # no checkpoint
        ["ckpt_path=null"],
        ["--multirun", "ckpt_path=RUN/checkpoints/last.ckpt"],  # sweeps make their own folders
        ["ckpt_path=RUN/checkpoints/last.ckpt", "hydra.run.dir=/tmp/new"],  # the user asks for a new folder
        ["ckpt_path=RUN/last.ckpt"],  # not inside a run folder
    ],
)
def test_resume_argv_leaves_other_commands_alone(tmp_path, argv):
    run = _run_folder(tmp_path)
    (run / "last.ckpt").write_bytes(b"x")
    argv = [a.replace("RUN", str(run)) for a in argv]
    assert resume_argv(argv) == argv


# --------------------------------------------------------------------------- settings from the checkpoint


def _saved(**changes) -> dict:
    cfg = compose_train(["paths.output_dir=/tmp/run"])
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return OmegaConf.to_container(cfg, resolve=False)


def test_restore_takes_model_data_and_seed_from_the_checkpoint():
    saved = _saved(**{"model.droptoken": 0.25, "data.batch_size": 4, "seed": 7, "trainer.max_epochs": 1})
    cfg = compose_train(["paths.output_dir=/tmp/run", "trainer.max_epochs=5"])
    lines = restore_config(cfg, saved, ["trainer.max_epochs=5"])
    assert cfg.model.droptoken == 0.25 and cfg.data.batch_size == 4 and cfg.seed == 7
    assert cfg.trainer.max_epochs == 5  # the trainer comes from the command line
    assert cfg.data.path.endswith("/data/demo")  # interpolations still resolve in this run
    assert cfg.data.clip.num_frames == cfg.model.input.num_frames
    assert sorted(lines) == [
        "data.batch_size: 4 from the checkpoint (the command line alone gives 64)",
        "data.seed: 7 from the checkpoint (the command line alone gives 42)",  # data.seed is ${seed}
        "model.droptoken: 0.25 from the checkpoint (the command line alone gives 0.5)",
        "seed: 7 from the checkpoint (the command line alone gives 42)",
    ]
    assert cfg.data.seed == 7


def test_restore_keeps_what_the_command_line_sets():
    saved = _saved(**{"model.droptoken": 0.25, "model.loss.temperature": 0.1, "data.batch_size": 4})
    overrides = ["model.droptoken=0.75", "data=manifest", "data.path=/somewhere", "~model.backbone.dropout"]
    cfg = compose_train(["paths.output_dir=/tmp/run", *overrides])
    lines = restore_config(cfg, saved, overrides)
    assert cfg.model.droptoken == 0.75  # a key on the command line wins
    assert cfg.model.loss.temperature == 0.1  # the rest of the section comes from the checkpoint
    assert "dropout" not in cfg.model.backbone  # deletions apply to the restored section too
    assert cfg.data.path == "/somewhere" and cfg.data.batch_size == 64  # a group choice keeps the whole section
    assert "model.droptoken: 0.75 from the command line (the checkpoint had 0.25)" in lines
    assert "model.loss.temperature: 0.1 from the checkpoint (the command line alone gives 0.07)" in lines


def test_restore_reports_nothing_when_the_checkpoint_agrees():
    saved = _saved()
    cfg = compose_train(["paths.output_dir=/tmp/run"])
    assert restore_config(cfg, saved, []) == []


# --------------------------------------------------------------------------- checkpoint files


def test_read_checkpoint_names_the_file_and_the_fix(tmp_path):
    good = tmp_path / "last.ckpt"
    torch.save({"global_step": 3, "w": torch.ones(1000)}, good)
    assert read_checkpoint(good)["global_step"] == 3
    with pytest.raises(FileNotFoundError, match=f"checkpoint {tmp_path / 'nope.ckpt'} does not exist"):
        read_checkpoint(tmp_path / "nope.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"cut.ckpt is truncated or corrupt .*other checkpoints in .*: last.ckpt"):
        read_checkpoint(cut)
    (tmp_path / "empty.ckpt").touch()
    with pytest.raises(CheckpointError, match="empty.ckpt is empty"):
        read_checkpoint(tmp_path / "empty.ckpt")
    code = tmp_path / "code.ckpt"
    torch.save({"obj": Path("x")}, code)
    with pytest.raises(CheckpointError, match="refused when loading with weights_only=True"):
        read_checkpoint(code)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("trainer", ["gpu", "ddp", "fsdp", "ddp debug=fdr"])
def test_gpu_trainers_without_a_gpu_say_so_and_name_the_cpu_choice(trainer):
    cfg = compose_train([f"trainer={trainer.split()[0]}", *trainer.split()[1:], "paths.output_dir=/tmp/run"])
    with pytest.raises(UserError, match="trainer.accelerator=gpu needs CUDA GPUs.*trainer=ddp_cpu"):
        check_hardware(cfg)


# --------------------------------------------------------------------------- last.ckpt


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/x", float(self.global_step))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(n: int):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(n, 2)), batch_size=1)


class Saves(L.Callback):
    """Records, before every batch, the step reached and the step held by last.ckpt."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_start(self, trainer, *args):
        if self.path.is_file():
            self.seen.append((trainer.global_step, int(torch.load(self.path, weights_only=True)["global_step"])))


@pytest.mark.parametrize("every", [None, 2])
def test_last_checkpoint_is_the_latest_state_whatever_the_monitor(tmp_path, every):
    last = LastCheckpoint(tmp_path, every_n_train_steps=every)
    best = L.pytorch.callbacks.ModelCheckpoint(tmp_path, monitor="val/x", mode="min", save_top_k=1)  # never improves
    spy = Saves(tmp_path / "last.ckpt")
    trainer = L.Trainer(
        max_epochs=3, limit_train_batches=5, callbacks=[best, last, spy], logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(Tiny(), _loader(5), _loader(1))
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 15
    # no .tmp left; the state before the latest is kept as previous.ckpt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=5.ckpt", "last.ckpt", "previous.ckpt"]
    assert torch.load(tmp_path / "previous.ckpt", weights_only=True)["global_step"] == (14 if every else 10)
    held = dict(spy.seen)  # step reached -> step in last.ckpt
    if every:
        assert [held[s] for s in (2, 3, 4, 5, 6, 7, 8, 14)] == [2, 2, 4, 5, 6, 6, 8, 14]
    else:
        assert 2 not in held and [held[s] for s in (5, 6, 10, 11)] == [5, 5, 10, 10]  # each epoch's end
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["best_model_path"].endswith("epoch=0-step=5.ckpt")  # it knows which file is best


# --------------------------------------------------------------------------- skipped samples


def test_every_skipped_clip_is_counted_per_epoch_and_in_total(tmp_path, demo_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    rows = (data / "train.jsonl").read_text().splitlines()[:15]
    (data / "train" / "broken.mp4").write_bytes(b"not a video" * 100)
    rows.append(json.dumps({"video": "train/broken.mp4", "captions": []}))
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    (data / "tokenizer.json").unlink(missing_ok=True)
    cfg = compose_train([
        "data=manifest", f"data.path={data}", "data.batch_size=4", "trainer.max_epochs=2",
        f"paths.output_dir={tmp_path / 'run'}", "trainer.log_every_n_steps=50",
    ])
    train(cfg)
    acc = EventAccumulator(str(next((tmp_path / "run" / "tensorboard").glob("events.*"))))
    acc.Reload()
    per_epoch = [e.value for e in acc.Scalars("data/skipped")]
    assert per_epoch == [1.0, 1.0]  # the broken clip, once in each epoch, although no step was logged
    assert [e.value for e in acc.Scalars("data/skipped_total")][-1] == 2.0
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["data_skipped_total"] == 2
