"""Hydra configs and the training entry point: every experiment, sweeps, DDP on CPU, resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import fit_with, make_cfg, small_data
from vatt.train import train

REPO = Path(__file__).resolve().parents[1]
ALL_EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml") if not p.stem.startswith("_"))
EXPERIMENTS = [e for e in ALL_EXPERIMENTS if not e.startswith("finetune_")]  # pretraining
FINETUNE = [e for e in ALL_EXPERIMENTS if e.startswith("finetune_")]
# paper-size models on small inputs so one CPU step is quick
SMALL_INPUT = ["model.input.num_frames=4", "model.input.image_size=32", "model.input.sample_rate=3200"]


def test_experiment_list_is_complete():
    assert {"demo", "vatt_bbs", "vatt_mbs", "vatt_lbs", "vatt_ma_medium"} <= set(EXPERIMENTS)
    datasets = {"ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "mit", "esc50", "audioset", "imagenet",
                "demo"}
    assert {f"finetune_{d}" for d in datasets} == set(FINETUNE)


# the paper's models (200-420 M parameters) take 5-15 s alone and up to 40 s beside another test process
@pytest.mark.parametrize("experiment", [pytest.param(e, marks=pytest.mark.slow) if e != "demo" else e for e in EXPERIMENTS])
def test_every_experiment_composes_and_fast_dev_runs(tmp_path, demo_root, experiment):
    extra = [] if experiment == "demo" else SMALL_INPUT
    cfg = make_cfg(tmp_path, [f"experiment={experiment}", "debug=fdr", *extra, *small_data(demo_root)])
    assert cfg.model.name == {"demo": "tiny"}.get(experiment, experiment.removeprefix("vatt_"))
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "val/v2a_R@10" in metrics


@pytest.mark.parametrize("experiment", [e for e in FINETUNE if e != "finetune_demo"])
def test_finetune_experiments_compose_and_without_data_say_how_to_provide_it(tmp_path, experiment):
    cfg = make_cfg(tmp_path, [f"experiment={experiment}"])
    dataset = experiment.removeprefix("finetune_")
    assert cfg.data.name == dataset and cfg.test_after_fit and cfg.model.optimizer.lr == 0.005
    assert cfg.data.clip == cfg.model.input and cfg.model.scheduler.warmup_steps == 2500
    assert cfg.callbacks.model_checkpoint.monitor == ("val/mAP" if dataset == "audioset" else "val/top1")
    with pytest.raises(Exception, match=f"data.root is not set \\(experiment {experiment} needs your copy of {dataset}\\)"):
        train(cfg)


def test_finetune_demo_fast_dev_runs(tmp_path, demo_root):
    cfg = make_cfg(tmp_path, ["experiment=finetune_demo", "debug=fdr", f"data.root={demo_root}", "data.generate_demo=false"])
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))


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


@pytest.mark.parametrize("override, message", [
    ("model.optimizer.lr=-1", "model.optimizer.lr=-1 must be a number > 0"),
    ("trainer.max_epochs=two", "trainer.max_epochs='two' must be an integer >= -1 (-1: no limit)"),
    ("data.batch_size=0", "data.batch_size=0 must be a positive integer"),
    ("model.droptoken=1.5", "model.droptoken=1.5 must be a number in [0, 1)"),
    ("model.scheduler.warmup_steps=2.5", "model.scheduler.warmup_steps=2.5 must be an integer >= 0"),
    ("+model.dropuot=0.1", "model.dropuot is not a setting of vatt.lightning.VATTPretrainModule; did you mean "
                           "model.droptoken?"),
    ("+model.backbone.dropuot=0.1", "model.backbone.dropuot is not a setting of the VATT model"),
    ("+data.batchsize=4", "data.batchsize is not a setting of vatt.data.pretrain.DemoDataModule; did you mean "
                          "data.batch_size?"),
])
def test_bad_config_values_and_keys_are_named_before_anything_starts(tmp_path, override, message):
    from vatt.config import check_train_config
    from vatt.errors import UserError

    with pytest.raises(UserError) as e:
        check_train_config(make_cfg(tmp_path, [override]))
    assert str(e.value).startswith(message)


@pytest.mark.slow  # two interpreters that import Lightning: 18-23 s beside another test process
def test_a_config_error_is_one_line_without_a_traceback_unless_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VATT_ROOT", "HYDRA_FULL_ERROR")}
    cmd = [sys.executable, "-m", "vatt.train", "model.optimizer.lr=-1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["vatt.train: error: model.optimizer.lr=-1 must be a number > 0",
                                                "(HYDRA_FULL_ERROR=1 shows the traceback)"]
    assert not (tmp_path / "data").exists()  # stopped before generating the demo data
    full = subprocess.run(cmd, cwd=tmp_path, env={**env, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert full.returncode == 1 and "Traceback" in full.stderr and "check_values" in full.stderr


def test_ignored_settings_are_warned_about(tmp_path, caplog):
    from vatt.config import check_train_config

    with caplog.at_level("WARNING", logger="vatt.config"):
        check_train_config(make_cfg(tmp_path, ["pretrained=weights.safetensors"]))
    assert "pretrained=weights.safetensors is ignored: a pretraining run starts from random weights" in caplog.text


class StepRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.first_step: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step is None:
            self.first_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.slow
def test_short_training_lowers_the_loss(tmp_path, demo_root):
    cfg = make_cfg(
        tmp_path,
        [*small_data(demo_root), "data.batch_size=8", "trainer.max_epochs=15", "logger=none", "callbacks=none",
         "model.droptoken=0.0", "model.backbone.dropout=0.0", "model.backbone.attn_dropout=0.0",
         "data.augment.color_prob=0", "data.augment.scale_jitter_prob=0", "data.augment.flip_prob=0",
         "model.scheduler.warmup_steps=2", "trainer.check_val_every_n_epoch=100"],
    )
    rec = StepRecorder()
    fit_with(cfg, rec)
    assert len(rec.losses) == 30
    first, last = sum(rec.losses[:4]) / 4, sum(rec.losses[-4:]) / 4
    assert last < 0.8 * first


@pytest.mark.slow
def test_a_run_resumed_at_an_epoch_boundary_equals_the_uninterrupted_run(tmp_path, demo_root):
    """Default callbacks, validation every epoch, loader workers, dropout and DropToken on."""
    from conftest import BatchRecorder, assert_same_training_state

    base = [*small_data(demo_root), "data.batch_size=4"]
    full = BatchRecorder()
    fit_with(make_cfg(tmp_path / "full", [*base, "trainer.max_epochs=2"]), full)
    fit_with(make_cfg(tmp_path / "stop", [*base, "trainer.max_epochs=1"]), BatchRecorder())
    ckpt = tmp_path / "stop" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 4
    resumed = BatchRecorder()
    fit_with(make_cfg(tmp_path / "resume", [*base, "trainer.max_epochs=2", f"ckpt_path={ckpt}"]), resumed)
    assert sorted(resumed.batches) == [4, 5, 6, 7]
    for step in (4, 5, 6, 7):
        assert resumed.batches[step] == full.batches[step]  # same clips, windows and augmentation
        assert resumed.losses[step] == pytest.approx(full.losses[step], rel=1e-6)
        assert resumed.lrs[step] == full.lrs[step]
    assert_same_training_state(tmp_path / "full" / "run" / "checkpoints" / "last.ckpt",
                               tmp_path / "resume" / "run" / "checkpoints" / "last.ckpt")


def test_cpu_training_shares_the_cores_with_its_loader_workers_and_says_so(tmp_path, demo_root, monkeypatch, caplog):
    from vatt.data import loading

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(loading, "usable_cores", lambda: 4)
    monkeypatch.setattr(loading, "_chosen_threads", None)
    cfg = make_cfg(tmp_path, ["debug=fdr", "data.num_workers=1", *small_data(demo_root)])
    try:
        with caplog.at_level("INFO", logger="vatt.train"):
            train(cfg)
        assert torch.get_num_threads() == 3  # 4 cores, one left to the worker
    finally:
        torch.set_num_threads(before)
    assert "CPU training: 3 math thread(s) per process beside 1 loader worker(s) on 4 core(s)" in caplog.text


def test_bf16_mixed_precision_runs_on_cpu(tmp_path, demo_root):
    cfg = make_cfg(tmp_path, ["debug=fdr", "trainer.precision=bf16-mixed", *small_data(demo_root)])
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m vatt.train ARGS`` started in ``cwd``, as a user runs it from their project folder."""
    env = {k: v for k, v in os.environ.items() if k != "VATT_ROOT"}
    proc = subprocess.run([sys.executable, "-m", "vatt.train", *args], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _only_run(cwd: Path) -> Path:
    (run,) = (cwd / "logs" / "train" / "runs").iterdir()
    return run


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_on_two_cpu_processes_runs(tmp_path, demo_root):
    proc = _run(["trainer=ddp_cpu", "debug=fdr", *small_data(demo_root)], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "distributed_backend=gloo" in out and "All distributed processes registered. Starting with 2 processes" in out
    # two processes train: SyncBatchNorm is asked for, and on CPU the log says why it is off
    assert "SyncBatchNorm is off: PyTorch synchronises BatchNorm only for GPU/XPU tensors" in out
    assert "global batch 4 = 2 device(s) x 2 clips per device" in out


@pytest.mark.slow
def test_a_runs_folder_holds_its_config_log_events_and_checkpoints(tmp_path, demo_root):
    # 2 epochs of 4 steps, each validated (the demo itself validates every third epoch, and at the end)
    _run([*small_data(demo_root), "debug=limit", "trainer.check_val_every_n_epoch=1"], cwd=tmp_path)
    run = _only_run(tmp_path)
    assert run.parent == tmp_path / "logs" / "train" / "runs"
    config = (run / ".hydra" / "config.yaml").read_text()
    assert f"path: {demo_root}" in config and "limit_train_batches: 4" in config
    log = (run / "train.log").read_text()
    per_epoch = [line for line in log.splitlines() if "val/v2a_R@10=" in line]
    assert len(per_epoch) == 2 and "epoch 0 step 4:" in per_epoch[0] and "epoch 1 step 8:" in per_epoch[1]
    assert "the best checkpoint follows val/t2v_R@10 (max)" in log
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(ckpts) == 3 and ckpts[1:] == ["last.ckpt", "previous.ckpt"]  # previous.ckpt: the state before
    assert re.fullmatch(r"epoch00[01]-step00000[48]\.ckpt", ckpts[0]), ckpts


@pytest.mark.slow
def test_a_validation_set_without_captions_trains_and_picks_the_best_by_video_audio(tmp_path, demo_root):
    data = tmp_path / "audioset_like"
    shutil.copytree(demo_root, data)
    rows = [json.loads(line) for line in (data / "val.jsonl").read_text().splitlines()]
    (data / "val.jsonl").write_text("".join(json.dumps({**r, "captions": []}) + "\n" for r in rows))
    proc = _run(["data=manifest", f"data.path={data}", "debug=limit", "trainer.max_epochs=1"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "no validation clip has a caption, so val/t2v_R@10 cannot be computed: the best checkpoint follows val/v2a_R@10" in out
    run = _only_run(tmp_path)
    assert (run / "checkpoints" / "epoch000-step000004.ckpt").is_file()
    assert "val/v2a_R@10=" in (run / "train.log").read_text()


@pytest.mark.slow
def test_two_shard_datasets_get_their_own_vocabularies_in_the_default_cache(tmp_path, demo_root):
    from vatt.data.prepare import prepare
    from vatt.data.tokenizer import WordTokenizer

    words, runs = {}, {}
    # dataset b names every shape "zebra": one word fewer than a, and none of a's shape words
    for name, swap in (("a", {}), ("b", {"circle": "zebra", "square": "zebra", "triangle": "zebra"})):
        rows = [json.loads(line) for line in (demo_root / "train.jsonl").read_text().splitlines()]
        for r in rows:
            r["video"] = str(demo_root / r["video"])
            for c in r["captions"]:
                for old, new in swap.items():
                    c["text"] = c["text"].replace(old, new)
        manifest = tmp_path / f"{name}.jsonl"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
        prepare("manifest", str(tmp_path / "shards" / name), manifest=manifest, workers=2, progress=False)
        own = WordTokenizer.build(c["text"] for r in rows for c in r["captions"])
        out = _run(["data=shards", f"data.path=shards/{name}", "debug=limit", "trainer.max_epochs=1"], cwd=tmp_path)
        run = max((tmp_path / "logs" / "train" / "runs").iterdir())
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        runs[name] = (ckpt["hyper_parameters"]["vocab_size"], own, out.stdout + out.stderr)
    for name, (table_size, own, _) in runs.items():
        assert table_size == own.vocab_size, name  # the model's word table fits this dataset's words
    for name, (_, own, out) in runs.items():
        (used,) = re.findall(r"caption vocabulary: \d+ words \((.*tokenizer.json)\)", out)
        assert Path(used).is_relative_to(tmp_path / "data" / "cache" / "shards")
        words[name] = set(json.loads(Path(used).read_text())["model"]["vocab"])
        assert words[name] == set(own.tokenizer.get_vocab())
    assert "zebra" in words["b"] and "zebra" not in words["a"]
    assert "circle" in words["a"] and "circle" not in words["b"]


def test_a_cached_vocabulary_from_other_sources_is_an_error_naming_both(tmp_path, demo_root):
    from vatt.data.shards import ShardsDataModule

    dm = ShardsDataModule(sources=[{"path": str(tmp_path / "a")}], cache_dir=str(tmp_path / "cache"))
    path = dm.tokenizer_path
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    (path.parent / "sources.json").write_text(json.dumps({"sources": [{"path": "/elsewhere", "fingerprint": None}]}))
    with pytest.raises(ValueError, match=r"built from .*/elsewhere.*not from this run's sources .*/a"):
        dm.prepare_data()


def test_resuming_with_another_vocabulary_names_both(tmp_path):
    from vatt.run_setup import check_vocabulary

    current = {"path": "data/cache/shards/vocab-b/tokenizer.json", "size": 120}
    check_vocabulary({"path": "/x/tokenizer.json", "size": 120}, current)
    check_vocabulary(None, current)  # a new run
    with pytest.raises(ValueError, match=r"vocabulary of 99 words \(/x/tokenizer.json\).*has 120 .*vocab-b.*data.vocab=/x"):
        check_vocabulary({"path": "/x/tokenizer.json", "size": 99}, current)


@pytest.mark.parametrize("target", ["train", "sweep", "eval"])
def test_make_passes_every_override_to_the_program_exactly_as_typed(target):
    """Quoted lists and dicts, spaces, quotes, $, backslashes and Hydra interpolations reach Hydra unchanged, in order."""
    import shlex

    typed = ["experiment=demo", "model.droptoken=0.25",
             "data.sources=[{path: data/shards/a b, weight: 0.5}, {path: data/shards/c, weight: 0.5}]",
             "+tag=it's", "hydra.run.dir=logs/${now:%H-%M}", "data.vocab=$HOME/words.txt", r"x=a\b c"]
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", target, *typed], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if f"-m vatt.{'eval' if target == 'eval' else 'train'}" in ln)
    args = shlex.split(line)
    assert args[args.index("-m") + 2:] == (["--multirun"] if target == "sweep" else []) + typed


@pytest.mark.slow
def test_compiled_model_trains_one_step(tmp_path, demo_root):
    from torch._dynamo.utils import counters

    counters.clear()
    # aot_eager: traced and compiled without generating kernels (the inductor path is timed by make bench's compile
    # section, tests/test_bench.py)
    cfg = make_cfg(tmp_path, ["debug=fdr", "model.compile=aot_eager", *small_data(demo_root)])
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))
    # the Transformer stacks really went through the compiler (graphs were captured and compiled)
    assert counters["stats"]["unique_graphs"] > 0
    assert counters["frames"]["ok"] > 0


def test_fsdp_config_wraps_transformer_blocks(tmp_path):
    import hydra

    from vatt.models.layers import Block

    cfg = make_cfg(tmp_path, ["trainer=fsdp", "trainer.strategy.activation_checkpointing=true"])
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert type(strategy).__name__ == "FSDPStrategy"
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.sync_batchnorm


@pytest.mark.parametrize("module, expected, private", [
    ("vatt.train", ["experiment: demo,", "model: finetune, vatt_bbs", "trainer: cpu, ddp, ddp_cpu"], ["_pretrain", "_finetune", "_downstream", "eval/"]),
    # in make eval, data=demo is the demo's labelled view (configs/eval/data/demo.yaml)
    ("vatt.eval", ["task: classifier, linear_probe, retrieval, zero_shot", "data: audioset, demo, demo_labels, esc50,"],
     ["_downstream", "manifest", "shards"]),
])
def test_help_lists_the_choices_a_user_has(tmp_path, module, expected, private):
    env = {k: v for k, v in os.environ.items() if k != "VATT_ROOT"}
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    groups = out.split("== Config ==")[0]
    for line in expected:
        assert line in groups, groups
    for name in private:
        assert name not in groups, groups
