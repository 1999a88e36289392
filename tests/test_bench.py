"""The benchmark suite on tiny sizes (keys and finite ratios; never a wall time), and the fast attention path."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vatt.bench import gpu_peak, markdown, run
from vatt.models.layers import Attention, chunked_dropout_attention, keep_mask


def _finite(*xs: float) -> bool:
    return all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in xs)


@pytest.mark.slow
def test_quick_bench_writes_every_section_with_finite_ratios(tmp_path, demo_root, capsys):
    results = run(tmp_path / "bench", quick=True, demo_root=demo_root)
    err = capsys.readouterr().err  # a line before and after every section: nothing is silent for minutes
    for i, section in enumerate(("steps", "compile", "checkpointing", "profile", "data", "demo", "convert"), 1):
        assert f"bench [{i}/7] {section} ..." in err and f"bench [{i}/7] {section}: done in " in err
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved["convert"]["model"] == "tiny" and saved["convert"]["peak_rss_mb"] > 0
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["torch"] == torch.__version__
    assert _finite(saved["gemm_flops_per_s"])
    assert set(saved["steps"]) == {"tiny video tower", "tiny audio tower", "tiny full model"}
    for r in saved["steps"].values():
        for rate in ("droptoken_0", "droptoken_0.5"):
            assert _finite(r[rate]["seconds"], r[rate]["flops"], r[rate]["of_gemm"])
        assert r["droptoken_0"]["flops"] > r["droptoken_0.5"]["flops"]  # DropToken saves FLOPs
        assert _finite(r["speedup"], r["flop_ratio"], r["speedup_vs_flop_ratio"])
    assert _finite(saved["compile"]["speedup"], saved["checkpointing"]["memory_ratio"], saved["checkpointing"]["time_ratio"])
    assert saved["checkpointing"]["peak_rss_mb"] > 0 and saved["checkpointing"]["peak_rss_mb_checkpointing"] > 0
    top = saved["profile"]["top"]
    assert top and all(_finite(e["seconds"], e["share"]) for e in top)
    assert top == sorted(top, key=lambda e: -e["seconds"]) and sum(e["share"] for e in top) <= 1.0 + 1e-9
    assert "aten::" in "".join(e["op"] for e in top)
    assert set(saved["data"]) == {"256p", "256p_10fps", "480p", "720p"}
    assert all(_finite(r["pipeline_clips_per_s"], r["baseline_clips_per_s"], r["speedup"]) for r in saved["data"].values())
    assert all(_finite(r["cpu_part_clips_per_s"], r["device_part_seconds_per_clip"]) for r in saved["data"].values())
    p = saved["pipeline_256p"]  # the per-clip pipeline at the source rate vs the workers' part at 10 fps
    assert p["today"] == saved["data"]["256p"]["pipeline_clips_per_s"]
    assert p["cpu_part"] == saved["data"]["256p_10fps"]["cpu_part_clips_per_s"]
    assert p["ratio"] == pytest.approx(p["cpu_part"] / p["today"])
    cores = saved["cores_per_gpu"]  # clips/s an H100 at 40 % MFU consumes, over the workers' rate per core
    assert cores["loader_clips_per_s_per_core"] == p["cpu_part"]
    for model in ("bbs", "mbs"):
        assert cores[model] == pytest.approx(cores[f"{model}_clips_per_s"] / cores["loader_clips_per_s_per_core"])
    assert "loader cores per GPU" in (tmp_path / "bench" / "results.md").read_text()
    assert _finite(saved["demo"]["samples_per_s"]) and 0.0 <= saved["demo"]["data_wait_fraction"] < 1.0
    table = (tmp_path / "bench" / "results.md").read_text()
    assert table == markdown(results) and "fp32 GEMM rate" in table and "| tiny video tower | 1 |" in table


def test_the_device_part_bench_gpu_sh_runs_times_a_batch_of_crop_boxes():
    from vatt.data.bench import device_part
    from vatt.data.clip import ClipConfig

    r = device_part("cpu", batch=3, clip=ClipConfig(4, 10.0, 32, 16000), repeat=1)  # bench/gpu.sh: on "cuda"
    assert r["batch"] == 3 and _finite(r["seconds_per_batch"], r["clips_per_s"])
    assert r["clips_per_s"] == pytest.approx(3 / r["seconds_per_batch"])


def test_cpu_step_bench_prints_seconds_per_step_beside_a_busy_process():
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "cpu_step.py"
    proc = subprocess.run([sys.executable, str(script), "--threads", "1", "--busy", "--steps", "1", "--batch", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r"tiny model, 4 clips, 1 thread\(s\) beside a busy process: ([0-9.]+) s per step", proc.stdout)
    assert found and float(found.group(1)) > 0, proc.stdout


def test_gpu_peaks_are_looked_up_by_device_name():
    assert gpu_peak("NVIDIA H200") == 989e12 and gpu_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_peak("NVIDIA L40S") == 362e12 and gpu_peak("Some other GPU") is None


# --------------------------------------------------------------------------- the fast attention path


def _qkv(b=2, h=3, n=50, d=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype, requires_grad=True) for _ in range(3)]


def test_chunked_attention_equals_sdpa_forward_and_gradients_without_dropout():
    q, k, v = _qkv()
    ours = chunked_dropout_attention(q, k, v, 0.0, chunk=16)
    ref = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(ours, ref, atol=1e-12)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        assert torch.allclose(a, b, atol=1e-12)


def test_chunked_attention_drops_probabilities_and_its_gradient_is_exact():
    p = 0.3

    def f(q, k, v):
        return chunked_dropout_attention(q, k, v, p, chunk=16, generator=torch.Generator().manual_seed(5))

    assert torch.autograd.gradcheck(f, tuple(_qkv(1, 2, 20, 4)))  # 2 query blocks, some probabilities dropped
    q, k, v = _qkv()
    # by hand with the same mask: softmax, zero where dropped, scale the rest by 1/(1-p)
    keep = torch.empty(2, 3, 50, 50, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    for i in range(0, 50, 16):
        keep[:, :, i : i + 16] = keep_mask((6, min(16, 50 - i), 50), p, gen).view(2, 3, -1, 50)
    probs = torch.softmax(q @ k.transpose(-2, -1) * 8**-0.5, dim=-1)
    assert torch.allclose(f(q, k, v), (probs * keep / (1 - p)) @ v, atol=1e-12)
    assert 0.25 < 1 - keep.mean() < 0.35


def test_attention_module_uses_the_chunked_path_only_for_cpu_training_with_dropout():
    torch.manual_seed(0)
    attn = Attention(32, 4, attn_drop=0.1)
    x = torch.randn(2, 20, 32)
    attn.eval()
    ref = attn(x)
    attn.chunked_dropout = False
    assert torch.allclose(attn(x), ref)  # eval: no dropout, the same SDPA path either way
    attn.train()
    torch.manual_seed(1)
    a = attn(x)
    attn.chunked_dropout = True
    torch.manual_seed(1)
    b = attn(x)
    assert a.shape == b.shape and not torch.allclose(a, b)  # both drop, with different random streams


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_drops_with_probability_p_in_both_halves_of_each_draw(p):
    mask = keep_mask((7, 100_001), p, torch.Generator().manual_seed(0))
    assert mask.shape == (7, 100_001) and mask.dtype == torch.bool
    flat = mask.view(-1)
    for half in (flat[0::2], flat[1::2]):  # the low and the high 16 bits of each 32-bit draw
        drop = 1 - half.double().mean().item()
        assert abs(drop - p) < 4 * math.sqrt(p * (1 - p) / half.numel())
    # neighbours are independent: P(both dropped) = p^2
    both = (~flat[0:-1:2] & ~flat[1::2]).double().mean().item()
    assert abs(both - p * p) < 0.01
    assert keep_mask((3, 5), 0.0).all()


def test_fast_dropout_zeroes_with_probability_p_scales_the_rest_and_keeps_nn_dropout_elsewhere():
    from vatt.models.layers import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.25)
    x = torch.rand(400, 500) + 1.0  # never zero
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.double().mean().item() - 0.25) < 0.005
    assert torch.allclose(y[kept], x[kept] / 0.75)
    g, = torch.autograd.grad(drop(x.requires_grad_()).sum(), x)  # a fresh mask: 0 or 1/(1-p)
    values = torch.unique(g).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.75)
    drop.eval()
    assert torch.equal(drop(x), x)
    assert isinstance(drop, torch.nn.Dropout) and drop.state_dict() == {}


@pytest.mark.slow
def test_codecs_bench_prints_both_x264_tunings_and_jpeg():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "bench/codecs.py"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["x264 tune none", "x264 tune fastdecode", "JPEG q90 frames"]
    sizes = [float(line.split(":")[1].split("KB")[0]) for line in lines[:2]]
    assert sizes[1] > sizes[0] > 0  # fastdecode's CAVLC costs bytes
    assert all("dB" in line and "ms/frame" in line for line in lines[:2]) and "decode_jpeg" in lines[2]
