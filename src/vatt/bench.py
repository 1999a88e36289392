"""Benchmarks measured against the machine's own limits: ``python -m vatt.bench`` (``make bench``).

Every figure is a ratio of two things measured side by side in this run, or a rate
next to its own reference measured in this run:

1. ``gemm``: the machine's fp32 matrix-multiply rate (the reference for 2).
2. ``steps``: a training step (forward + backward, train mode) of the BBS video
   tower, the audio tower and the full BBS model at the paper's geometry, at
   DropToken 0 and 0.5: achieved FLOP/s (FLOPs counted on the meta device) / GEMM
   rate; the DropToken-0.5 speed-up against what its FLOP ratio predicts.
3. ``compile``: ``torch.compile`` vs eager for the same step; ``checkpointing``:
   activation checkpointing vs none (time and peak memory, each in a fresh process);
   ``profile``: ``torch.profiler``'s top operators of the video-tower step.
4. ``data``: the per-clip pipeline's clips/s per core from sources at 256p (as
   ``prepare --transcode 256`` writes them), 480p and 720p, against decoding every
   frame (``vatt.data.bench``).
5. ``demo``: demo training samples/s and the fraction of the step the loop waits
   for data.

Results go to ``bench/results.json`` and ``bench/results.md`` with the machine's
description. ``--quick`` shrinks every size (the tests use it). GPU numbers come
from ``bench/gpu.sh`` on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vatt.models import create_model
from vatt.models.vatt import VATT

# --------------------------------------------------------------------------- machine and reference


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Best wall time of ``repeat`` calls after ``warmup`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_rate(n: int = 2048, repeat: int = 5) -> float:
    """fp32 matrix-multiply FLOP/s of this machine (n x n x n, best of ``repeat``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    seconds = timed(lambda: torch.mm(a, b, out=out), repeat)
    return 2 * n**3 / seconds


# --------------------------------------------------------------------------- training steps


def _inputs(model: VATT, batch: int, parts: tuple[str, ...], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    cfg = model.config
    out = {}
    if "video" in parts:
        out["video"] = torch.rand(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    if "audio" in parts:
        out["audio"] = torch.randn(batch, cfg.audio_samples, device=device)
    if "text" in parts:
        out["text"] = torch.randint(1, cfg.vocab_size, (batch, 5, cfg.max_words), device=device)
    return out


def _loss(model: VATT, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A scalar of the towers' outputs: one tower alone (no heads), or the full model with its heads."""
    if len(inputs) == 1:
        (part, x), = inputs.items()
        return getattr(model, part)(x).float().square().mean()
    return sum(v.float().square().mean() for k, v in model(**inputs).items() if k != "text_mask")


def step_flops(name: str, parts: tuple[str, ...], droptoken: float, batch: int, **overrides: Any) -> float:
    """FLOPs of one forward + backward (counted on the meta device, nothing allocated)."""
    with torch.device("meta"):
        model = create_model(name, droptoken=droptoken, vocab_size=1000, **overrides).train()
        inputs = _inputs(model, batch, parts, "meta")
    counter = FlopCounterMode(display=False)
    with counter:
        _loss(model, inputs).backward()
    return float(counter.get_total_flops())


def train_step(name: str, parts: tuple[str, ...], droptoken: float, batch: int, repeat: int = 2,
               compile: bool = False, checkpointing: bool = False, **overrides: Any) -> dict[str, float]:
    """Seconds per forward + backward step and FLOP/s for ``parts`` of model ``name`` in train mode."""
    torch.manual_seed(0)
    model = create_model(name, droptoken=droptoken, vocab_size=1000, **overrides).train()
    for part in ("video", "audio", "text"):
        getattr(model, part).transformer.grad_checkpointing = checkpointing
        if compile and part in parts:
            getattr(model, part).transformer.compile()
    inputs = _inputs(model, batch, parts)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        _loss(model, inputs).backward()

    seconds = timed(step, repeat, warmup=2 if compile else 1)
    flops = step_flops(name, parts, droptoken, batch, **overrides)
    return {"seconds": seconds, "flops": flops, "flops_per_s": flops / seconds}


def step_report(name: str, parts: tuple[str, ...], batch: int, gemm: float, repeat: int, **overrides: Any) -> dict:
    """DropToken 0 and 0.5 of one setting: rates, fractions of the GEMM rate, speed-up vs FLOP ratio."""
    at0 = train_step(name, parts, 0.0, batch, repeat, **overrides)
    at5 = train_step(name, parts, 0.5, batch, repeat, **overrides)
    flop_ratio = at0["flops"] / at5["flops"]
    speedup = at0["seconds"] / at5["seconds"]
    return {
        "parts": list(parts), "batch": batch,
        "droptoken_0": {**at0, "of_gemm": at0["flops_per_s"] / gemm},
        "droptoken_0.5": {**at5, "of_gemm": at5["flops_per_s"] / gemm},
        "speedup": speedup, "flop_ratio": flop_ratio, "speedup_vs_flop_ratio": speedup / flop_ratio,
    }


def _run_python(code: str) -> list[str]:
    """Run ``code`` in a fresh Python; its output lines, the last one its peak resident memory (kB)."""
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork + exec, so a
    # child of a big parent would report the parent's peak
    proc = subprocess.run([sys.executable, "-c", code + "\nfrom pathlib import Path\n"
                           "print([l.split()[1] for l in Path('/proc/self/status').read_text().splitlines()"
                           " if l.startswith('VmHWM')][0])"],
                          capture_output=True, text=True, check=True, timeout=1800)
    return proc.stdout.strip().splitlines()


def _subprocess_step(name: str, batch: int, checkpointing: bool, overrides: dict[str, Any]) -> tuple[float, float]:
    """(seconds per step, peak resident MB) of the full model's step in a fresh process."""
    code = ("import json\nfrom vatt.bench import train_step\n"
            f"r = train_step({name!r}, ('video', 'audio', 'text'), 0.5, {batch}, 1, "
            f"checkpointing={checkpointing}, **{overrides!r})\nprint(r['seconds'])")
    out = _run_python(code)
    return float(out[-2]), int(out[-1]) / 1024


def checkpointing_report(name: str, batch: int, **overrides: Any) -> dict:
    """Activation checkpointing vs none: step time and peak memory, each in a fresh process."""
    plain, plain_mb = _subprocess_step(name, batch, False, overrides)
    ckpt, ckpt_mb = _subprocess_step(name, batch, True, overrides)
    return {"seconds": plain, "seconds_checkpointing": ckpt, "time_ratio": ckpt / plain, "peak_rss_mb": plain_mb,
            "peak_rss_mb_checkpointing": ckpt_mb, "memory_ratio": ckpt_mb / plain_mb}


def compile_report(name: str, parts: tuple[str, ...], batch: int, repeat: int, **overrides: Any) -> dict:
    eager = train_step(name, parts, 0.5, batch, repeat, **overrides)
    compiled = train_step(name, parts, 0.5, batch, repeat, compile=True, **overrides)
    return {"seconds_eager": eager["seconds"], "seconds_compiled": compiled["seconds"],
            "speedup": eager["seconds"] / compiled["seconds"]}


def profile_report(name: str, parts: tuple[str, ...], batch: int, top: int = 12, **overrides: Any) -> dict:
    """``torch.profiler``'s top operators (self CPU time) of one training step at DropToken 0: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = create_model(name, droptoken=0.0, vocab_size=1000, **overrides).train()
    inputs = _inputs(model, batch, parts)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        _loss(model, inputs).backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {"total_seconds": total / 1e6, "top": [
        {"op": e.key, "seconds": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total, "calls": e.count}
        for e in events[:top]]}


# --------------------------------------------------------------------------- GPU (bench/gpu.sh)

# dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name()
GPU_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
                 "A10G": 125e12, "A10": 125e12, "RTX 4090": 165e12, "V100": 125e12}


# what "a GPU" means for the loader-cores figure: an H100's dense bf16 peak at 40 % model FLOPs utilisation
CORES_PER_GPU_MFU, CORES_PER_GPU_PEAK = 0.4, 989e12


def cores_per_gpu(per_core: float, quick: bool = False) -> dict[str, float]:
    """Loader cores one H100 at 40 % MFU needs for BBS and MBS pretraining, at ``per_core`` clips/s per core.

    A clip's training step (forward + backward, DropToken 0.5, paper geometry; counted
    as ``make flops`` does) sets how many clips per second the GPU consumes.
    """
    paper = {} if not quick else {"num_frames": 4, "image_size": 32, "audio_samples": 1280}
    out = {"mfu": CORES_PER_GPU_MFU, "peak_flops_per_s": CORES_PER_GPU_PEAK, "loader_clips_per_s_per_core": per_core}
    for name in ("bbs", "mbs"):
        # batch 2 (the heads' BatchNorm needs two clips in train mode), per clip
        flops = step_flops("tiny" if quick else name, ("video", "audio", "text"), 0.5, 2, **paper) / 2
        clips_per_s = CORES_PER_GPU_MFU * CORES_PER_GPU_PEAK / flops
        out[name] = clips_per_s / per_core
        out[f"{name}_clips_per_s"] = clips_per_s
    return out


def gpu_peak(name: str) -> float | None:
    """The dense bf16 peak of a GPU named ``name`` (longest matching key), or None when unknown."""
    hits = [k for k in GPU_BF16_PEAK if k.lower() in name.lower()]
    return GPU_BF16_PEAK[max(hits, key=len)] if hits else None


def gpu_step(name: str, batch: int, droptoken: float = 0.5, steps: int = 10, compile: bool = True,
             fsdp: bool = False) -> dict[str, float]:
    """bf16-mixed training step of the full model on one GPU (fused SDPA, optionally compiled / FSDP-wrapped)."""
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    model = create_model(name, droptoken=droptoken).cuda().train()
    if compile:
        for part in ("video", "audio", "text"):
            getattr(model, part).transformer.compile()
    module = model
    if fsdp:
        import torch.distributed as dist
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        from vatt.models.layers import Block

        if not dist.is_initialized():
            dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29517", rank=0, world_size=1)
        module = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True)
    opt = torch.optim.Adam(module.parameters(), lr=1e-4, fused=not fsdp)
    inputs = _inputs(model, batch, ("video", "audio", "text"), "cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = module(**inputs)
        sum(v.float().square().mean() for k, v in out.items() if k != "text_mask").backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / steps
    flops = step_flops(name, ("video", "audio", "text"), droptoken, batch)
    return {"batch": batch, "seconds": seconds, "samples_per_s": batch / seconds, "flops_per_s": flops / seconds,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}


def largest_batch(name: str, start: int = 8, limit: int = 2048) -> int:
    """The largest power-of-two batch whose bf16 training step fits in GPU memory."""
    fits, batch = 0, start
    while batch <= limit:
        try:
            gpu_step(name, batch, steps=1, compile=False)
            fits, batch = batch, batch * 2
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


def gpu_report(batch: int = 32) -> dict[str, Any]:
    """BBS and MBS at paper geometry on this GPU: step time, samples/s, MFU, memory, max batch, FSDP, loader cores."""
    name = torch.cuda.get_device_name(0)
    peak = gpu_peak(name)
    out: dict[str, Any] = {"device": name, "bf16_peak_flops": peak}
    for model in ("bbs", "mbs"):
        r = gpu_step(model, batch)
        r["mfu"] = r["flops_per_s"] / peak if peak else None
        r["largest_batch"] = largest_batch(model)
        out[model] = r
    out["bbs_fsdp_one_gpu"] = gpu_step("bbs", batch, fsdp=True, compile=False)
    return out


# --------------------------------------------------------------------------- demo training


def demo_report(quick: bool = False, root: str | Path | None = None, steps: int = 24) -> dict[str, float]:
    """Demo training (the default experiment) for ``steps`` steps: samples/s and the data-wait fraction.

    The loop waits for data between the end of one step and the start of the next;
    the rest is the step itself. ``root`` is the demo data (default ``data/demo``).
    """
    import lightning as L
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vatt.runs import CONFIG_DIR
    from vatt.train import train

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.wait, self.step, self.samples, self._mark = [], [], 0, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            now = time.perf_counter()
            if self._mark is not None:
                self.wait.append(now - self._mark)
            self._start = now

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self._mark = time.perf_counter()
            self.step.append(self._mark - self._start)
            self.samples += batch["video"].shape[0]

    root = Path(root or "data/demo")
    with tempfile.TemporaryDirectory() as tmp:
        # the demo experiment's training, reading the demo folder as a manifest folder (no generation)
        overrides = ["data=manifest", f"data.path={root}", "data.augment.hue=0.0", f"trainer.max_steps={3 if quick else steps}",
                     "logger=none", "callbacks=none", "+trainer.limit_val_batches=0", f"paths.output_dir={tmp}"]
        if quick:
            overrides += ["data.batch_size=4"]
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            cfg = compose("train", overrides=overrides)
        clock = Clock()
        import vatt.train as vt

        original = vt._instantiate_all
        vt._instantiate_all = lambda group: original(group) + ([clock] if group is cfg.get("callbacks") else [])
        try:
            train(cfg)
        finally:
            vt._instantiate_all = original
    # the first step includes worker start-up: leave it out
    wait, step = sum(clock.wait[1:]), sum(clock.step[1:])
    n = clock.samples * (len(clock.step) - 1) / max(1, len(clock.step))
    return {"samples_per_s": n / max(wait + step, 1e-9), "data_wait_fraction": wait / max(wait + step, 1e-9),
            "step_seconds": step / max(1, len(clock.step) - 1), "steps": len(clock.step)}


# --------------------------------------------------------------------------- report


def convert_report(quick: bool = False) -> dict[str, Any]:
    """Convert a full-size checkpoint in the authors' layout (random values): time and peak memory, in a fresh process.

    ``make bench`` writes BBS (193.9M parameters + the 2^16 x 300 word table, ~0.85 GB)
    as the authors' release stores it, then runs ``vatt.convert`` on it; ``--quick``:
    the tiny model.
    """
    import numpy as np

    from vatt.convert import write_bundle
    from vatt.convert.tf_vatt import release_layout
    from vatt.models.vatt import build_vatt
    from vatt.models.vatt import VATTConfig

    name = "tiny" if quick else "bbs"
    cfg = VATTConfig.from_preset(name)
    with torch.device("meta"):
        layout = release_layout(build_vatt(cfg), cfg)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "ckpt-500000"
        t0 = time.perf_counter()
        write_bundle(prefix, ((k, rng.standard_normal(shape, dtype=np.float32) * 0.02) for k, shape in layout.items()))
        written = time.perf_counter() - t0
        size = prefix.with_name(prefix.name + ".data-00000-of-00001").stat().st_size
        code = ("import json, sys\nfrom vatt.convert import convert\n"
                f"print(json.dumps(convert({str(prefix)!r}, {str(Path(tmp) / 'out.safetensors')!r})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
    return {"model": name, "checkpoint_mb": round(size / 1e6, 1), "tensors": len(layout),
            "write_seconds": round(written, 1), "seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"]}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch {m['torch']}"
             + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"),
             "", f"fp32 GEMM rate: **{results['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s**", ""]
    if results.get("steps"):
        lines += ["| training step (fwd+bwd) | batch | DropToken 0: s / of GEMM | 0.5: s / of GEMM | speed-up | FLOP ratio |",
                  "|---|---|---|---|---|---|"]
        for key, r in results["steps"].items():
            a, b = r["droptoken_0"], r["droptoken_0.5"]
            lines.append(f"| {key} | {r['batch']} | {a['seconds']:.2f} / {a['of_gemm']:.2f} | {b['seconds']:.2f} / "
                         f"{b['of_gemm']:.2f} | {r['speedup']:.2f}x | {r['flop_ratio']:.2f}x |")
        lines.append("")
    if results.get("compile"):
        c = results["compile"]
        lines.append(f"torch.compile vs eager ({c['setting']}): {c['seconds_eager']:.2f} s -> {c['seconds_compiled']:.2f} s "
                     f"({c['speedup']:.2f}x)")
    if results.get("checkpointing"):
        c = results["checkpointing"]
        lines.append(f"activation checkpointing ({c['setting']}): time x{c['time_ratio']:.2f}, peak memory "
                     f"{c['peak_rss_mb']:.0f} -> {c['peak_rss_mb_checkpointing']:.0f} MB (x{c['memory_ratio']:.2f})")
    if results.get("profile"):
        p = results["profile"]
        lines += ["", f"Where a step's time goes ({p['setting']}; torch.profiler, self CPU time, "
                      f"{p['total_seconds']:.2f} s in all):", "", "| operator | seconds | share | calls |", "|---|---|---|---|"]
        lines += [f"| {e['op']} | {e['seconds']:.2f} | {100 * e['share']:.0f} % | {e['calls']} |" for e in p["top"]]
    if results.get("data"):
        lines += ["", "| data pipeline source | per-clip pipeline before the split, clips/s per core | decode-all baseline "
                      "| ratio | workers' part | device part (this CPU), ms per clip |", "|---|---|---|---|---|---|"]
        for key, r in results["data"].items():
            lines.append(f"| {key} | {r['pipeline_clips_per_s']:.2f} | {r['baseline_clips_per_s']:.2f} | {r['speedup']:.2f}x "
                         f"| {r['cpu_part_clips_per_s']:.2f} | {1e3 * r['device_part_seconds_per_clip']:.1f} |")
    if results.get("pipeline_256p"):
        p = results["pipeline_256p"]
        lines += ["", f"loader clips/s per core from 256p: the per-clip pipeline before the split, on shards as prepare "
                      f"wrote them before (source rate, x264 defaults) {p['today']:.2f}; the workers' part now, on "
                      f"--transcode 256 --fps 10 shards (fastdecode) {p['cpu_part']:.2f} (**{p['ratio']:.2f}x**)"]
    if results.get("cores_per_gpu"):
        c = results["cores_per_gpu"]
        lines += ["", f"loader cores per GPU (an H100 at {100 * c['mfu']:.0f} % MFU of {c['peak_flops_per_s'] / 1e12:.0f} "
                      f"TFLOP/s bf16, at {c['loader_clips_per_s_per_core']:.2f} clips/s per core from 256p, 10 fps): "
                      f"BBS **{c['bbs']:.0f}** ({c['bbs_clips_per_s']:.0f} clips/s), "
                      f"MBS **{c['mbs']:.0f}** ({c['mbs_clips_per_s']:.0f} clips/s)"]
    if results.get("demo"):
        d = results["demo"]
        lines += ["", f"demo training: {d['samples_per_s']:.1f} samples/s; the loop waits for data "
                      f"{100 * d['data_wait_fraction']:.0f} % of the step time"]
    if results.get("convert"):
        c = results["convert"]
        lines += ["", f"conversion of a {c['model']} checkpoint in the authors' layout ({c['checkpoint_mb']} MB, "
                      f"{c['tensors']} tensors): {c['seconds']} s, peak memory {c['peak_rss_mb']} MB"]
    return "\n".join(lines) + "\n"


def run(out_dir: str | Path = "bench", quick: bool = False, sections: tuple[str, ...] = ("steps", "compile",
        "checkpointing", "profile", "data", "demo", "convert"), demo_root: str | Path | None = None) -> dict[str, Any]:
    """Run the benchmarks, write ``results.json`` / ``results.md`` into ``out_dir`` and return the results."""
    from vatt.data.bench import data_report, pipeline_256p

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    repeat = 1 if quick else 2
    results: dict[str, Any] = {"machine": machine(), "quick": quick}
    results["gemm_flops_per_s"] = gemm = gemm_rate(256 if quick else 2048, 2 if quick else 5)
    # paper geometry (32 x 224^2, 3.2 s of 48 kHz audio); --quick: a tiny geometry
    paper = {} if not quick else {"num_frames": 4, "image_size": 32, "audio_samples": 1280}
    name = "tiny" if quick else "bbs"

    def save() -> None:  # after every section, so a failure later keeps what was measured
        (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (out_dir / "results.md").write_text(markdown(results))

    ck_name = "tiny" if quick else "mbs"
    jobs: dict[str, Callable[[], Any]] = {
        "steps": lambda: {
            f"{name} video tower": step_report(name, ("video",), 1, gemm, repeat, **paper),
            f"{name} audio tower": step_report(name, ("audio",), 2, gemm, repeat, **paper),
            f"{name} full model": step_report(name, ("video", "audio", "text"), 2, gemm, repeat, **paper),
        },
        "compile": lambda: {"setting": f"{name} video tower, batch 1, DropToken 0.5",
                            **compile_report(name, ("video",), 1, repeat, **paper)},
        "checkpointing": lambda: {"setting": f"{ck_name} full model, batch 2, DropToken 0.5",
                                  **checkpointing_report(ck_name, 2, **paper)},
        "profile": lambda: {"setting": f"{name} video tower, batch 1, DropToken 0",
                            **profile_report(name, ("video",), 1, **paper)},
        "data": lambda: data_section(),
        "demo": lambda: demo_report(quick, demo_root),
        "convert": lambda: convert_report(quick),
    }
    chosen = [s for s in jobs if s in sections]

    def data_section() -> dict[str, Any]:
        rows = data_report(quick)
        results["pipeline_256p"] = pipeline_256p(rows)
        results["cores_per_gpu"] = cores_per_gpu(results["pipeline_256p"]["cpu_part"], quick)
        return rows

    for i, section in enumerate(chosen, 1):
        # one line before and after each section: a full run takes minutes, and nothing else is printed meanwhile
        print(f"bench [{i}/{len(chosen)}] {section} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[section] = jobs[section]()
        save()
        print(f"bench [{i}/{len(chosen)}] {section}: done in {time.perf_counter() - t0:.0f} s "
              f"(results so far in {out_dir / 'results.json'})", file=sys.stderr, flush=True)
    save()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench", help="folder for results.json and results.md (default: bench)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections: steps compile checkpointing profile data demo convert")
    parser.add_argument("--gpu", action="store_true", help="the GPU benchmarks (bench/gpu.sh), then the data section")
    args = parser.parse_args(argv)
    if args.gpu:
        return gpu_main(Path(args.out))
    sections = tuple(args.only) if args.only else ("steps", "compile", "checkpointing", "profile", "data", "demo",
                                                   "convert")
    results = run(args.out, args.quick, sections)
    print(markdown(results))
    return results


def gpu_main(out_dir: Path) -> dict[str, Any]:
    """``bench/gpu.sh``: the GPU numbers, and how many loader cores one GPU needs at the measured pipeline rate."""
    from vatt.data.bench import data_report, device_part, pipeline_256p

    if not torch.cuda.is_available():
        raise SystemExit("bench --gpu needs a CUDA GPU; on CPU run `make bench`")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "gpu": gpu_report()}
    rows = data_report()
    results["pipeline_256p"] = pipeline_256p(rows)
    per_core = results["pipeline_256p"]["cpu_part"]  # what the loader workers do; the rest runs on the GPU
    results["device_augment"] = device_part("cuda")
    for model in ("bbs", "mbs"):
        results["gpu"][model]["loader_cores_needed"] = results["gpu"][model]["samples_per_s"] / per_core
    (out_dir / "gpu.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
