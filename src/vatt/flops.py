"""Parameter and FLOP report for the VATT presets at the paper's input sizes.

``python -m vatt.flops`` (or ``make flops``) prints, per model, trainable
parameters without the word table and forward GFLOPs per clip (video + audio +
one 16-word caption) at DropToken 0/25/50/75 %.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the
``meta`` device: nothing is allocated, and the attention kernel is dispatched to
an op the counter knows (on CPU tensors the fused attention kernel is invisible
to it). A multiply-add counts as 2 FLOPs.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from vatt.models import DropToken, count_parameters, create_model
from vatt.models.vatt import VATTConfig, build_vatt
from vatt.models.vatt import VATTConfig

PAPER_PARAMS_M = {"bbs": 197, "mbs": 264, "lbs": 415, "ma_medium": 155}
PAPER_MBS_GFLOPS = {0.0: 784.8, 0.25: 574.2, 0.5: 375.4, 0.75: 188.1}
RATES = (0.0, 0.25, 0.5, 0.75)


def forward_gflops(name: str, droptoken: float, batch: int = 1, **overrides) -> dict[str, float]:
    """Forward GFLOPs per clip, per modality and in total, with DropToken active at ``droptoken``."""
    return config_gflops(VATTConfig.from_preset(name, droptoken=droptoken, **overrides), batch)


def config_gflops(cfg: VATTConfig, batch: int = 1) -> dict[str, float]:
    """``forward_gflops`` of the model a ``VATTConfig`` describes (its own DropToken rate and geometry)."""
    with torch.device("meta"):
        model = build_vatt(cfg)
        model.eval()
        for m in model.modules():  # DropToken only acts in training; everything else stays in eval
            if isinstance(m, DropToken):
                m.train()
        video = torch.empty(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size)
        audio = torch.empty(batch, cfg.audio_samples)
        text = torch.ones(batch, cfg.max_words, dtype=torch.long)
    model.requires_grad_(False)  # forward only; also keeps FlopCounterMode's module tracker happy
    out = {}
    for key, kwargs in (("video", dict(video=video)), ("audio", dict(audio=audio)), ("text", dict(text=text))):
        counter = FlopCounterMode(display=False)
        with counter:
            model(**kwargs)
        out[key] = counter.get_total_flops() / batch / 1e9
    out["total"] = out["video"] + out["audio"] + out["text"]
    return out


def parameters(name: str) -> int:
    """Trainable parameters without the word table (the paper's counts leave it out too)."""
    with torch.device("meta"):
        model = create_model(name)
    return count_parameters(model, trainable_only=True, exclude_word_table=True)


def report(names: list[str]) -> str:
    lines = [
        "| model | params | params (M) | paper (M) | GFLOPs @0% | @25% | @50% | @75% | ratio 25/50/75 vs 0 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        flops = {r: forward_gflops(name, r)["total"] for r in RATES}
        ratios = "/".join(f"{flops[r] / flops[0.0]:.2f}" for r in RATES[1:])
        paper = PAPER_PARAMS_M.get(name, "-")
        n = parameters(name)
        lines.append(
            f"| {name} | {n:,} | {n / 1e6:.1f} | {paper} | "
            + " | ".join(f"{flops[r]:.1f}" for r in RATES)
            + f" | {ratios} |"
        )
    p = PAPER_MBS_GFLOPS
    lines.append(
        f"| paper VATT-MBS | | | 264 | {p[0.0]} | {p[0.25]} | {p[0.5]} | {p[0.75]} | "
        + "/".join(f"{p[r] / p[0.0]:.2f}" for r in RATES[1:])
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["bbs", "mbs", "lbs", "ma_medium"])
    args = parser.parse_args(argv)
    print(report(args.models))


if __name__ == "__main__":
    main()
