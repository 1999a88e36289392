"""Seconds per training step of the tiny demo model (64 clips, fused Adam) on the CPU, alone or beside a busy process.

    .venv/bin/python bench/cpu_step.py --threads 2           # the machine's speed right now (README: suite times)
    .venv/bin/python bench/cpu_step.py --threads 2 --busy    # beside one busy process, as beside a loader worker
    .venv/bin/python bench/cpu_step.py --threads 1 --busy

The README's figures for the step's threads (on 2 cores: 0.30-0.34 s alone; 0.95-1.41 s with 2 threads and
0.49-0.55 s with 1 beside a busy process) come from these three commands.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from vatt.losses import mil_nce_loss, nce_loss
from vatt.models import create_model


def step_seconds(threads: int, steps: int = 10, batch: int = 64) -> float:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = create_model("tiny", droptoken=0.5, vocab_size=64, num_frames=8, image_size=64, audio_samples=12800)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    video, audio = torch.rand(batch, 3, 8, 64, 64) * 2 - 1, torch.randn(batch, 12800)
    text = torch.randint(1, 64, (batch, 5, 16))

    def step() -> None:
        out = model(video=video, audio=audio, text=text)
        loss = nce_loss(out["video_va"], out["audio_va"]) + mil_nce_loss(
            out["video_vt"], out["text_vt"], text_mask=out["text_mask"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch math threads")
    parser.add_argument("--busy", action="store_true", help="run beside one process that keeps a core busy")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=64, help="clips per step")
    args = parser.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        seconds = step_seconds(args.threads, args.steps, args.batch)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    print(f"tiny model, {args.batch} clips, {args.threads} thread(s){' beside a busy process' if busy else ''}: "
          f"{seconds:.3f} s per step")


if __name__ == "__main__":
    main()
